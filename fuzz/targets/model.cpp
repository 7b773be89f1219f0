// Target: a whole model directory as `switchyard score` loads it: config.json and
// model.safetensors (joined by kPartMarker in one input, so that both mutate together), then a
// forward pass over a few tokens.
#include <filesystem>
#include <span>

#include "model/model.h"
#include "scratch.h"
#include "target.h"
#include "targets/seeds_common.h"

namespace sy::fuzz {

void run_one(std::string_view bytes) {
  const auto [config, weights] = split_parts(bytes);
  const std::string dir = scratch_dir() + "/model";
  std::filesystem::create_directories(dir);
  write_file_in(dir, "config.json", config);
  write_file_in(dir, "model.safetensors", weights);
  const model::Model m = model::Model::load(dir);
  run_briefly(m);
}

void write_seeds(const std::string& dir) {
  for (const auto& seed : seed_checkpoints()) {
    const std::string ckpt = write_seed_checkpoint(seed);
    write_seed(dir, seed.name,
               read_file(ckpt + "/config.json") + std::string(kPartMarker) +
                   read_file(ckpt + "/model.safetensors"));
  }
}

}  // namespace sy::fuzz
