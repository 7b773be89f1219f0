// The model's weights as views into the memory-mapped checkpoint (no copies for matrices),
// with every shape checked against the config. Small vectors (norms, biases, router) are
// converted to float32 once at load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/mla_attention.h"
#include "moe/expert_cache.h"
#include "moe/expert_ffn.h"
#include "ops/repack.h"
#include "ops/weight.h"

namespace sy::model {

using FfnWeights = moe::FfnWeights;

struct MoeWeights {
  std::vector<float> router;          // [E, H] float32 (routing runs in float32)
  std::vector<float> selection_bias;  // [E] or empty
  std::vector<float> router_bias;     // [E] or empty (GPT-OSS: added to the logits)
  // GPT-OSS: the experts' biases ([E, I] gate, [E, I] up, [E, H] down) the views point into.
  std::vector<float> gate_bias, up_bias, down_bias;
  std::vector<FfnWeights> experts;  // [E]
  bool has_shared = false;
  FfnWeights shared;                // [Is, H] ...
  std::vector<float> shared_gate;   // [H] or empty (Qwen2-MoE, ScMoE CG-1)
  std::vector<float> combine_gate;  // [2, H] or empty (ScMoE CG-2)
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;             // [H]
  std::vector<float> attn_norm_bias, ffn_norm_bias;   // [H] LayerNorm models, else empty
  ops::WeightView q, k, v, o;                         // q [nh*hd, H], k/v [nkv*hd, H], o [H, nh*hd]
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when absent
  std::vector<float> q_norm, k_norm;                  // [hd] per-head or [width] full-width
  MlaWeights mla;                                     // MLA layers (q, k, v unused; o as above)
  std::vector<float> sinks;                           // [nh] attention sinks (GPT-OSS) or empty
  bool is_moe = false;
  std::vector<float> shortcut_norm;  // [H] ScMoE: RMSNorm of the routed branch's input
  FfnWeights dense;                  // when !is_moe
  MoeWeights moe;                    // when is_moe
};

struct ModelWeights {
  io::TensorStore store;               // owns the mappings every view points into
  ops::WeightView embed;               // [V, H]
  std::vector<float> final_norm;       // [H]
  std::vector<float> final_norm_bias;  // [H] LayerNorm models, else empty
  ops::WeightView lm_head;             // [V, H] (== embed when tied)
  std::vector<LayerWeights> layers;
  size_t num_unused_tensors = 0;  // tensors in the files that no layer consumed
  // Loader accounting for expert parallelism: routed-expert bytes this process holds views of
  // (and may touch) versus all routed-expert bytes in the checkpoint.
  size_t expert_bytes_held = 0;
  size_t expert_bytes_total = 0;
  // Offloaded experts ([layer][expert], empty for dense layers): where each expert's matrices
  // lie in the files; the views in `layers` then hold shapes only.
  std::vector<std::vector<moe::OffloadedExpert>> offloaded;
  // With offloaded experts, the other matrices copied out of the mapping (views point here).
  std::vector<std::unique_ptr<uint8_t[]>> resident;
  // Block-type matrices repacked for the int8 kernels (views' `packed` point here).
  std::vector<std::unique_ptr<ops::PackedWeight>> repacked;
  size_t repacked_bytes = 0;
};

// Which routed experts this process computes (the same ids in every MoE layer); empty = all.
// The shapes of the others are still checked, but their views stay empty (data == nullptr),
// so their pages of the memory-mapped files are never read.
using ExpertMask = std::vector<bool>;

// Loads and checks the weights of `model_dir` against `config`. With offload_experts the
// routed experts' pages are never touched: `offloaded` says where they are.
ModelWeights load_weights(const std::string& model_dir, const ModelConfig& config,
                          const ExpertMask& owned_experts = {}, bool offload_experts = false);

// Parameter counts for `inspect`: all, and those touched per token (top-k experts).
struct ParamCounts {
  int64_t total = 0;
  int64_t active_per_token = 0;
  int64_t embedding = 0;  // token embedding (excluded from the active count's matmuls)
};
ParamCounts count_params(const ModelConfig& config);

// Bytes of weights read to decode one token (embedding row excluded, LM head included).
size_t decode_bytes_per_token(const ModelConfig& config, const ModelWeights& weights);

}  // namespace sy::model
