// Seed inputs shared by several targets: the synthetic checkpoints make-tiny writes, one per
// family and layout variant.
#pragma once

#include <string>
#include <vector>

#include "model/model.h"
#include "synth/synthetic_checkpoint.h"

namespace sy::fuzz {

struct SeedCheckpoint {
  std::string name;  // e.g. "qwen2_moe-shared-f32"
  synth::SyntheticSpec spec;
};

// Small variants covering every family and the options that change config.json or the
// tensor layout (shared experts, dense layers, groups, tied embeddings, fused experts, dtypes).
// Sizes stay tiny so that seeds are fast to parse.
std::vector<SeedCheckpoint> seed_checkpoints();

// Writes the variant into a fresh directory under the scratch area and returns it.
std::string write_seed_checkpoint(const SeedCheckpoint& seed);

// Runs a loaded model over three tokens (the first, last and middle id): the forward reads
// every weight once, and inputs small enough to hold in a file are cheap to run.
void run_briefly(const model::Model& m);

}  // namespace sy::fuzz
