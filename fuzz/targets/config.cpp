// Target: config.json of every family, then what the engine derives from it before any tensor
// is read (parameter counts, tensor names of the first and last layer).
#include "model/config.h"
#include "model/tensor_names.h"
#include "model/weights.h"
#include "scratch.h"
#include "target.h"
#include "targets/seeds_common.h"

namespace sy::fuzz {

void run_one(std::string_view bytes) {
  const model::ModelConfig c = model::parse_config(std::string(bytes), "config.json");
  const model::ParamCounts counts = model::count_params(c);
  volatile int64_t sink = counts.total + counts.active_per_token + c.q_width() + c.kv_width();
  for (int64_t layer : {int64_t(0), c.num_layers - 1}) {
    if (c.layer_is_moe.at(size_t(layer))) {
      sink = sink + int64_t(model::moe_prefix(c, layer).size());
      sink = sink + int64_t(model::expert_names(c, layer, c.router.num_experts - 1).down.size());
      if (c.shared_intermediate_size > 0)
        sink = sink + int64_t(model::shared_expert_names(c, layer).gate.size());
    } else {
      sink = sink + int64_t(model::dense_ffn_names(c, layer).up.size());
    }
  }
}

void write_seeds(const std::string& dir) {
  for (const auto& seed : seed_checkpoints()) {
    const std::string ckpt = write_seed_checkpoint(seed);
    write_seed(dir, seed.name + ".json", read_file(ckpt + "/config.json"));
  }
}

}  // namespace sy::fuzz
