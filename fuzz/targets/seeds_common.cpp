#include "targets/seeds_common.h"

#include <filesystem>
#include <span>
#include <vector>

#include "scratch.h"

namespace sy::fuzz {

std::vector<SeedCheckpoint> seed_checkpoints() {
  using model::Family;
  auto tiny = [](Family f) {
    synth::SyntheticSpec s;
    s.family = f;
    s.hidden_size = 16;
    s.num_heads = 2;
    s.num_kv_heads = 1;
    s.num_experts = 4;
    s.top_k = 2;
    s.expert_ffn = 8;
    s.dense_ffn = 12;
    s.vocab_size = 48;     // small files: more executions per second
    s.tokenizer = "none";  // tokenizer.json has its own target
    return s;
  };
  std::vector<SeedCheckpoint> out;
  out.push_back({"mixtral", tiny(Family::kMixtral)});
  {
    auto s = tiny(Family::kMixtral);
    s.fused_experts = true;
    s.dtype = "F32";
    s.tie_embeddings = true;
    out.push_back({"mixtral-fused-f32-tied", s});
  }
  {
    auto s = tiny(Family::kQwen2Moe);
    s.shared_ffn = 8;
    s.dtype = "F16";
    out.push_back({"qwen2_moe-shared-f16", s});
  }
  out.push_back({"qwen3_moe", tiny(Family::kQwen3Moe)});
  {
    auto s = tiny(Family::kOlmoe);
    s.clip_qkv = 8.0f;
    out.push_back({"olmoe-clip", s});
  }
  {
    auto s = tiny(Family::kDots1);
    s.shared_ffn = 8;
    s.first_dense_layers = 1;
    s.num_groups = 2;
    s.topk_groups = 1;
    s.routed_scaling_factor = 2.0f;
    out.push_back({"dots1-groups-dense", s});
  }
  return out;
}

std::string write_seed_checkpoint(const SeedCheckpoint& seed) {
  const std::string dir = scratch_dir() + "/seed-" + seed.name;
  std::filesystem::remove_all(dir);
  synth::write_synthetic_checkpoint(seed.spec, dir);
  return dir;
}

void run_briefly(const model::Model& m) {
  const model::ModelConfig& c = m.config();
  model::KvCache cache(c, 4);
  model::Workspace ws;
  std::vector<float> logits(size_t(c.vocab_size));
  std::vector<int32_t> tokens = {0, int32_t(c.vocab_size - 1), int32_t(c.vocab_size / 2)};
  const model::SequenceChunk chunk{&cache, tokens};
  m.forward(std::span(&chunk, 1), model::LogitsFor::kLastToken, logits.data(), ws);
}

}  // namespace sy::fuzz
