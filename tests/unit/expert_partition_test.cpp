// Expert partition with a neuron order (expert reconstruction: sub-expert 0 takes the neurons
// listed first) still computes the original function, because an FFN's neurons can be
// permuted freely; an order that is not a permutation is refused. (test_partition.sh checks
// the natural order against the PyTorch reference for every family.)
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "expect_error.h"
#include "model/expert_partition.h"
#include "model/model.h"
#include "synth/synthetic_checkpoint.h"
#include "temp_dir.h"

namespace sy {
namespace {

synth::SyntheticSpec tiny_spec() {
  synth::SyntheticSpec s;
  s.family = model::Family::kQwen2Moe;
  s.dtype = "F32";
  s.tokenizer = "none";
  s.vocab_size = 53;
  s.hidden_size = 24;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.num_experts = 4;
  s.top_k = 2;
  s.expert_ffn = 12;
  s.shared_ffn = 12;
  return s;
}

std::vector<float> logits(const std::string& dir, std::vector<int32_t>& tokens) {
  const model::Model m = model::Model::load(dir);
  model::KvCache cache(m.config(), int64_t(tokens.size()));
  model::SequenceChunk chunk{&cache, tokens};
  std::vector<float> out(tokens.size() * size_t(m.config().vocab_size));
  model::Workspace ws;
  m.forward({&chunk, 1}, model::LogitsFor::kAllTokens, out.data(), ws);
  return out;
}

TEST(ExpertPartition, ReconstructedOrderKeepsTheFunction) {
  testing::TempDir dir;
  const std::string src = dir.path() + "/src", dst = dir.path() + "/dst";
  const synth::SyntheticSpec spec = tiny_spec();
  synth::write_synthetic_checkpoint(spec, src);
  model::PartitionOptions o;
  o.factor = 3;
  std::mt19937 rng(5);
  o.neuron_order.resize(size_t(spec.num_layers));
  for (auto& layer : o.neuron_order)
    for (int64_t e = 0; e < spec.num_experts; ++e) {
      std::vector<int32_t> order(static_cast<size_t>(spec.expert_ffn));
      for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
      std::shuffle(order.begin(), order.end(), rng);
      layer.push_back(order);
    }
  const model::PartitionSummary s = model::partition_experts(src, dst, o);
  EXPECT_EQ(s.experts_after, 12);
  EXPECT_EQ(s.width_after, 4);
  std::vector<int32_t> tokens{1, 7, 22, 3, 50, 9, 9, 31};
  const std::vector<float> a = logits(src, tokens), b = logits(dst, tokens);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 2e-5) << "logit " << i;
}

TEST(ExpertPartition, RefusesAnOrderThatIsNotAPermutation) {
  testing::TempDir dir;
  const std::string src = dir.path() + "/src";
  const synth::SyntheticSpec spec = tiny_spec();
  synth::write_synthetic_checkpoint(spec, src);
  model::PartitionOptions o;
  o.neuron_order.assign(size_t(spec.num_layers), {});
  o.neuron_order[1].assign(size_t(spec.num_experts), std::vector<int32_t>(12, 0));
  testing::expect_error([&] { model::partition_experts(src, dir.path() + "/dst", o); },
                        {"neuron order of layer 1 expert 0 is not a permutation"});
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/dst"));
}

// Zero neurons add nothing (silu(0) * 0 and a zero down column), so a padded model computes
// the original function; per-expert and fused layouts alike.
TEST(ExpertPartition, PaddingWithZeroNeuronsKeepsTheFunction) {
  for (bool fused : {false, true}) {
    testing::TempDir dir;
    const std::string src = dir.path() + "/src", dst = dir.path() + "/dst";
    synth::SyntheticSpec spec = tiny_spec();
    spec.fused_experts = fused;
    synth::write_synthetic_checkpoint(spec, src);
    const model::PartitionSummary s = model::pad_experts(src, dst, 40);
    EXPECT_EQ(s.width_after, 40);
    EXPECT_EQ(model::Model::load(dst).config().expert_intermediate_size, 40);
    std::vector<int32_t> tokens{4, 17, 2, 2, 52, 30};
    const std::vector<float> a = logits(src, tokens), b = logits(dst, tokens);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 2e-5) << "logit " << i;
    testing::expect_error([&] { model::pad_experts(src, dir.path() + "/narrow", 12); },
                          {"padded width 12 must exceed the experts' FFN width 12"});
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/narrow"));
  }
}

}  // namespace
}  // namespace sy
