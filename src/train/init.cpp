#include "train/init.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "util/error.h"
#include "util/memory.h"

namespace sy::train {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_residual_output(const std::string& name) {
  return ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight") ||
         ends_with(name, ".w2.weight");
}

}  // namespace

FreshModel fresh_model(const synth::SyntheticSpec& spec_in, int32_t eos_id, uint64_t seed) {
  if (spec_in.vocab_size <= 0) fail("a fresh model needs a vocabulary size");
  synth::SyntheticSpec spec = spec_in;
  spec.dtype = "F32";
  spec.tokenizer = "none";
  spec.num_shards = 1;
  spec.fused_experts = false;
  // The layout (names, shapes, config.json) is synth's, so it is exactly what inference loads;
  // nothing is written to disk. Parameters go in name order, as load_params adds them.
  synth::SyntheticLayout layout = synth::synthetic_layout(spec);
  std::sort(layout.tensors.begin(), layout.tensors.end());
  uint64_t numel = 0;
  for (const auto& [name, shape] : layout.tensors) {
    uint64_t n = 1;
    for (int64_t d : shape) n = checked_mul(n, uint64_t(d), "parameter " + name);
    numel += n;
  }
  require_memory(checked_mul(numel, 16, "the model's parameters"),
                 fmt::format("a fresh model of {} parameters (float32 values, gradients and AdamW "
                             "moments)",
                             numel));
  FreshModel out;
  for (const auto& [name, shape] : layout.tensors) out.params.add(name, shape);
  auto cfg = nlohmann::json::parse(layout.config_json);
  cfg["eos_token_id"] = eos_id;
  cfg["bos_token_id"] = eos_id;
  cfg["torch_dtype"] = "float32";
  out.config_json = cfg.dump(2);

  const double out_std = 0.02 / std::sqrt(2.0 * double(std::max<int64_t>(1, spec.num_layers)));
  uint64_t index = 0;
  for (Param& p : out.params.all()) {
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + ++index);
    if (p.shape.size() == 1) {  // norm weights 1; biases and the selection bias 0
      const bool norm = ends_with(p.name, "norm.weight");
      std::fill(p.value.begin(), p.value.end(), norm ? 1.0f : 0.0f);
      continue;
    }
    std::normal_distribution<float> dist(0.0f, float(is_residual_output(p.name) ? out_std : 0.02));
    for (float& v : p.value) v = dist(rng);
  }
  return out;
}

}  // namespace sy::train
