// Equivalences of the forward pass on synthetic checkpoints of every family:
// prefill-then-decode == one full forward, and a batch == the same sequences one at a time.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include <unistd.h>

#include "model/model.h"
#include "synth/synthetic_checkpoint.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string name;
  synth::SyntheticSpec spec;
};
// GoogleTest prints a parameter into the test's listed name; the case name is enough.
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  auto base = [](model::Family family) {
    synth::SyntheticSpec s;
    s.family = family;
    s.dtype = "F32";
    s.tokenizer = "none";
    s.vocab_size = 97;
    s.hidden_size = 48;
    s.num_layers = 3;
    s.num_heads = 3;  // odd head count
    s.num_kv_heads = 1;
    s.head_dim = 16;
    s.num_experts = 6;  // not a power of two
    s.top_k = 3;
    s.expert_ffn = 40;
    return s;
  };
  out.push_back({"mixtral_k3", base(model::Family::kMixtral)});
  auto m1 = base(model::Family::kMixtral);
  m1.top_k = 1;
  m1.dtype = "BF16";
  out.push_back({"mixtral_k1_bf16", m1});
  auto q2 = base(model::Family::kQwen2Moe);
  q2.shared_ffn = 56;
  q2.first_dense_layers = 1;
  q2.dense_ffn = 64;
  q2.dtype = "F16";
  out.push_back({"qwen2_moe_shared", q2});
  auto q3 = base(model::Family::kQwen3Moe);
  q3.fused_experts = true;
  out.push_back({"qwen3_moe_fused", q3});
  auto ol = base(model::Family::kOlmoe);
  ol.num_heads = 4, ol.num_kv_heads = 4, ol.head_dim = 12, ol.clip_qkv = 3.0f;
  out.push_back({"olmoe_clip", ol});
  auto d = base(model::Family::kDots1);
  d.num_experts = 8, d.top_k = 2, d.num_groups = 4, d.topk_groups = 2;
  d.first_dense_layers = 1, d.dense_ffn = 64, d.shared_ffn = 80, d.routed_scaling_factor = 2.5f;
  d.expert_ffn = 40;
  d.num_shards = 2;
  out.push_back({"dots1_groups", d});
  // The families whose layouts make-tiny writes in their published form.
  auto g = base(model::Family::kGptOss);  // sinks, biases, clamped SwiGLU, sliding layers
  g.top_k = 2;
  out.push_back({"gpt_oss", g});
  auto ph = base(model::Family::kPhimoe);  // SparseMixer, LayerNorm with bias
  ph.top_k = 2;
  out.push_back({"phimoe", ph});
  out.push_back({"hunyuan_v1_moe", base(model::Family::kHunyuanMoe)});
  out.push_back({"dbrx", base(model::Family::kDbrx)});  // fused Wqkv / w1 v1 w2, clip_qkv
  auto l4 = base(model::Family::kLlama4);               // a dense layer first, NoPE in layer 3
  l4.num_layers = 4, l4.first_dense_layers = 1, l4.dense_ffn = 64;
  out.push_back({"llama4_text", l4});
  auto glm = base(model::Family::kGlm4Moe);
  glm.first_dense_layers = 1, glm.dense_ffn = 64;
  out.push_back({"glm4_moe", glm});
  out.push_back({"ernie4_5_moe", base(model::Family::kErnie45Moe)});
  out.push_back({"granitemoe", base(model::Family::kGraniteMoe)});
  return out;
}

// A fresh checkpoint per test process, removed when the process ends.
struct TempRoot {
  fs::path path = fs::temp_directory_path() / ("sy_model_test_" + std::to_string(::getpid()));
  ~TempRoot() { fs::remove_all(path); }
};

std::string checkpoint_dir(const Case& c) {
  static TempRoot root;
  const fs::path dir = root.path / c.name;
  if (!fs::exists(dir / "config.json")) synth::write_synthetic_checkpoint(c.spec, dir.string());
  return dir.string();
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

// Two float32 computations of the same logits differ by summation order only:
// |a - b| <= c * eps * sqrt(K) * max(1, |b|max) with K the accumulation depth.
void expect_close(const float* actual, const float* expected, int64_t n, int64_t depth,
                  const std::string& what) {
  float scale = 1.0f;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(expected[i]));
  const double tol = 16.0 * 1.1920929e-7 * std::sqrt(double(depth)) * scale;
  double worst = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(actual[i]) - expected[i]);
    if (!(d <= worst)) worst = d, at = i;
  }
  EXPECT_LE(worst, tol) << what << ": worst element " << at << " actual " << actual[at]
                        << " expected " << expected[at] << " (tolerance " << tol << ")";
}

class ModelEquivalence : public ::testing::TestWithParam<Case> {};

TEST_P(ModelEquivalence, PrefillThenDecodeEqualsFullForward) {
  const model::Model m = model::Model::load(checkpoint_dir(GetParam()));
  const auto& c = m.config();
  const int64_t V = c.vocab_size, T = 9, prefill = 4;
  const auto tokens = random_tokens(T, V, 7);
  const int64_t depth = c.hidden_size * c.num_layers;

  model::Workspace ws;
  model::KvCache full_cache(c, T);
  std::vector<float> full(size_t(T * V));
  model::SequenceChunk all{&full_cache, tokens};
  m.forward({&all, 1}, model::LogitsFor::kAllTokens, full.data(), ws);

  model::KvCache cache(c, T);
  std::vector<float> step(static_cast<size_t>(V));
  model::SequenceChunk first{&cache, std::span<const int32_t>(tokens.data(), prefill)};
  m.forward({&first, 1}, model::LogitsFor::kLastToken, step.data(), ws);
  expect_close(step.data(), full.data() + (prefill - 1) * V, V, depth, "prefill");
  for (int64_t t = prefill; t < T; ++t) {
    model::SequenceChunk one{&cache, std::span<const int32_t>(tokens.data() + t, 1)};
    m.forward({&one, 1}, model::LogitsFor::kLastToken, step.data(), ws);
    expect_close(step.data(), full.data() + t * V, V, depth,
                 "decode position " + std::to_string(t));
  }
  EXPECT_EQ(cache.size(), T);
}

TEST_P(ModelEquivalence, BatchEqualsSingles) {
  const model::Model m = model::Model::load(checkpoint_dir(GetParam()));
  const auto& c = m.config();
  const int64_t V = c.vocab_size;
  const int64_t depth = c.hidden_size * c.num_layers;
  const std::vector<int64_t> lengths = {5, 1, 7};
  std::vector<std::vector<int32_t>> seqs;
  for (size_t i = 0; i < lengths.size(); ++i)
    seqs.push_back(random_tokens(lengths[i], V, 100 + uint32_t(i)));

  model::Workspace ws;
  std::vector<model::KvCache> caches;
  for (int64_t n : lengths) caches.emplace_back(c, n + 1);
  std::vector<model::SequenceChunk> chunks;
  int64_t total = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    chunks.push_back({&caches[i], seqs[i]});
    total += lengths[i];
  }
  std::vector<float> batched(size_t(total * V));
  m.forward(chunks, model::LogitsFor::kAllTokens, batched.data(), ws);

  int64_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    model::KvCache cache(c, lengths[i]);
    std::vector<float> single(size_t(lengths[i] * V));
    model::SequenceChunk chunk{&cache, seqs[i]};
    m.forward({&chunk, 1}, model::LogitsFor::kAllTokens, single.data(), ws);
    expect_close(batched.data() + row * V, single.data(), lengths[i] * V, depth,
                 "sequence " + std::to_string(i));
    row += lengths[i];
  }

  // A batched decode step (one new token per sequence) equals single decode steps.
  std::vector<int32_t> next = {3, 5, 11};
  std::vector<model::SequenceChunk> steps;
  for (size_t i = 0; i < seqs.size(); ++i) steps.push_back({&caches[i], {&next[i], 1}});
  std::vector<float> step_logits(size_t(3 * V));
  m.forward(steps, model::LogitsFor::kLastToken, step_logits.data(), ws);
  for (size_t i = 0; i < seqs.size(); ++i) {
    model::KvCache cache(c, lengths[i] + 1);
    std::vector<int32_t> seq = seqs[i];
    seq.push_back(next[i]);
    std::vector<float> single(static_cast<size_t>(V));
    model::SequenceChunk chunk{&cache, seq};
    m.forward({&chunk, 1}, model::LogitsFor::kLastToken, single.data(), ws);
    expect_close(step_logits.data() + i * V, single.data(), V, depth,
                 "decode step " + std::to_string(i));
  }
}

TEST_P(ModelEquivalence, LoadStatsCountEveryRoutedPair) {
  const model::Model m = model::Model::load(checkpoint_dir(GetParam()));
  const auto& c = m.config();
  const auto tokens = random_tokens(6, c.vocab_size, 3);
  model::Workspace ws;
  model::KvCache cache(c, 6);
  std::vector<float> logits(size_t(c.vocab_size));
  moe::LoadStats stats = m.new_load_stats();
  model::SequenceChunk chunk{&cache, tokens};
  m.forward({&chunk, 1}, model::LogitsFor::kLastToken, logits.data(), ws, &stats);
  for (int l = 0; l < int(c.num_layers); ++l) {
    int64_t sum = 0;
    for (int e = 0; e < c.router.num_experts; ++e) sum += stats.count(l, e);
    EXPECT_EQ(sum, c.layer_is_moe[size_t(l)] ? 6 * c.router.top_k : 0) << "layer " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ModelEquivalence, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sy
