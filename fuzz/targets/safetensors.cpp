// Target: one .safetensors file (header JSON, offsets, dtypes, shapes), then every tensor read
// as the loaders read it.
#include <cstring>

#include "io/safetensors.h"
#include "scratch.h"
#include "target.h"
#include "targets/seeds_common.h"
#include "util/dtype.h"

namespace sy::fuzz {

void run_one(std::string_view bytes) {
  const io::SafetensorsFile file(write_scratch("model.safetensors", bytes));
  volatile uint8_t sink = 0;
  for (const auto& t : file.tensors()) {
    if (t.nbytes) sink = sink + static_cast<const uint8_t*>(t.data)[t.nbytes - 1];
    if (t.dtype && t.nbytes <= (1u << 20)) {
      std::vector<float> v(size_t(t.numel()));
      to_f32(*t.dtype, t.data, v.data(), v.size());
    }
    (void)t.shape_str();
  }
  for (const auto& [k, v] : file.metadata()) sink = sink + uint8_t(k.size() + v.size());
}

void write_seeds(const std::string& dir) {
  for (const auto& seed : seed_checkpoints()) {
    const std::string ckpt = write_seed_checkpoint(seed);
    write_seed(dir, seed.name + ".safetensors", read_file(ckpt + "/model.safetensors"));
  }
}

}  // namespace sy::fuzz
