// The training forward (train::TrainModel) and inference's Model::forward give the same logits
// for every supported family: on synthetic checkpoints of each (GQA, tied head, shared and
// dense layers, per-head and full-width q/k norms with clip_qkv, sigmoid group routing) and on
// the checkpoints transformers 5.17 itself wrote (../shared/fixtures/hf5). Torch-free: the
// reference is the inference path, which other tests hold to transformers' logits.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "model/model.h"
#include "synth/synthetic_checkpoint.h"
#include "temp_dir.h"
#include "train/params.h"
#include "train/train_model.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

// Inference: each row of `tokens` [B, S] is its own sequence, all in one forward call.
std::vector<float> inference_logits(const std::string& dir, const std::vector<int32_t>& tokens,
                                    int64_t B, int64_t S) {
  const model::Model m = model::Model::load(dir);
  std::vector<model::KvCache> caches;
  for (int64_t b = 0; b < B; ++b) caches.emplace_back(m.config(), S);
  std::vector<model::SequenceChunk> chunks;
  for (int64_t b = 0; b < B; ++b)
    chunks.push_back({&caches[size_t(b)], {tokens.data() + b * S, size_t(S)}});
  std::vector<float> logits(size_t(B * S * m.config().vocab_size));
  model::Workspace ws;
  m.forward(chunks, model::LogitsFor::kAllTokens, logits.data(), ws);
  return logits;
}

std::vector<float> training_logits(const std::string& dir, const std::vector<int32_t>& tokens,
                                   int64_t B, int64_t S) {
  train::ParamSet params = train::load_params(dir);
  train::TrainModel tm(model::load_config(dir), params);
  std::vector<float> logits;
  tm.evaluate(tokens.data(), nullptr, B, S, train::LossOptions{}, &logits);
  return logits;
}

// Two float32 computations of the same logits that differ in summation order only:
// |a - b| <= 16 eps sqrt(K) max(1, max |b|), K = hidden size x layers (accumulation depth).
void expect_same_logits(const std::string& dir, const std::string& what) {
  const model::ModelConfig c = model::load_config(dir);
  const int64_t B = 2, S = 9;
  const auto tokens = random_tokens(B * S, c.vocab_size, 13);
  const std::vector<float> inf = inference_logits(dir, tokens, B, S);
  const std::vector<float> trn = training_logits(dir, tokens, B, S);
  ASSERT_EQ(trn.size(), inf.size()) << what;
  float scale = 1.0f;
  for (float v : inf) scale = std::max(scale, std::fabs(v));
  const double tol = 16.0 * 1.1920929e-7 * std::sqrt(double(c.hidden_size * c.num_layers)) * scale;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < inf.size(); ++i) {
    const double d = std::fabs(double(trn[i]) - inf[i]);
    if (!(d <= worst)) worst = d, at = i;
  }
  EXPECT_LE(worst, tol) << what << ": worst logit " << at << " (token " << at / size_t(c.vocab_size)
                        << ") training " << trn[at] << " inference " << inf[at] << ", tolerance "
                        << tol;
}

struct SynthCase {
  std::string name;
  synth::SyntheticSpec spec;
};
void PrintTo(const SynthCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<SynthCase> synth_cases() {
  auto base = [](model::Family family) {
    synth::SyntheticSpec s;
    s.family = family;
    s.dtype = "F32";
    s.tokenizer = "none";
    s.vocab_size = 89;
    s.hidden_size = 40;
    s.num_layers = 3;
    s.num_heads = 4;
    s.num_kv_heads = 2;
    s.head_dim = 10;
    s.num_experts = 6;
    s.top_k = 2;
    s.expert_ffn = 24;
    return s;
  };
  std::vector<SynthCase> out;
  out.push_back({"mixtral_gqa", base(model::Family::kMixtral)});
  auto tied = base(model::Family::kMixtral);
  tied.top_k = 1, tied.tie_embeddings = true;
  out.push_back({"mixtral_tied_k1", tied});
  auto q2 = base(model::Family::kQwen2Moe);
  q2.shared_ffn = 32, q2.first_dense_layers = 1, q2.dense_ffn = 48;
  out.push_back({"qwen2_moe_shared_dense", q2});
  out.push_back({"qwen3_moe_per_head_norm", base(model::Family::kQwen3Moe)});
  auto ol = base(model::Family::kOlmoe);
  ol.num_kv_heads = 4, ol.clip_qkv = 0.8f;
  out.push_back({"olmoe_full_norm_clip", ol});
  auto d = base(model::Family::kDots1);
  d.num_experts = 8, d.num_groups = 4, d.topk_groups = 2, d.first_dense_layers = 1;
  d.dense_ffn = 48, d.shared_ffn = 48, d.routed_scaling_factor = 2.5f;
  out.push_back({"dots1_sigmoid_groups", d});
  return out;
}

class TrainForwardSynthetic : public ::testing::TestWithParam<SynthCase> {};

TEST_P(TrainForwardSynthetic, LogitsEqualInference) {
  testing::TempDir dir;
  synth::write_synthetic_checkpoint(GetParam().spec, dir.path());
  expect_same_logits(dir.path(), GetParam().name);
}

INSTANTIATE_TEST_SUITE_P(Families, TrainForwardSynthetic, ::testing::ValuesIn(synth_cases()),
                         [](const auto& info) { return info.param.name; });

// The transformers-written fixtures of the families both paths load.
class TrainForwardTransformers : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainForwardTransformers, LogitsEqualInference) {
  const fs::path dir = fs::path(SY_SOURCE_DIR) / ".." / "shared" / "fixtures" / "hf5" / GetParam();
  if (!fs::exists(dir / "config.json")) GTEST_SKIP() << "no fixture at " << dir;
  expect_same_logits(dir.string(), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Hf5, TrainForwardTransformers,
                         ::testing::Values("mixtral", "qwen2_moe", "olmoe", "dots1"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace sy
