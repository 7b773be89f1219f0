#include "model/tensor_names.h"

namespace sy::model {

namespace {

FfnNames ffn(const std::string& prefix, const char* gate, const char* up, const char* down) {
  return {prefix + gate + ".weight", prefix + up + ".weight", prefix + down + ".weight"};
}

}  // namespace

std::string layer_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

std::string moe_prefix(const ModelConfig& c, int64_t layer) {
  return layer_prefix(layer) + (c.family == Family::kMixtral ? "block_sparse_moe." : "mlp.");
}

FfnNames dense_ffn_names(int64_t layer) {
  return ffn(layer_prefix(layer) + "mlp.", "gate_proj", "up_proj", "down_proj");
}

FfnNames expert_names(const ModelConfig& c, int64_t layer, int64_t expert) {
  const std::string p = moe_prefix(c, layer) + "experts." + std::to_string(expert) + ".";
  return c.family == Family::kMixtral ? ffn(p, "w1", "w3", "w2")
                                      : ffn(p, "gate_proj", "up_proj", "down_proj");
}

FfnNames shared_expert_names(const ModelConfig& c, int64_t layer) {
  return ffn(
      moe_prefix(c, layer) + (c.family == Family::kQwen2Moe ? "shared_expert." : "shared_experts."),
      "gate_proj", "up_proj", "down_proj");
}

}  // namespace sy::model
