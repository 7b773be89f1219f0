// ScMoE (docs/scmoe.md) beyond what the PyTorch twin checks (test_logits_vs_torch,
// test_train_vs_torch):
//  - the whole model's gradient along random directions equals fourth-order finite
//    differences of its loss, for the parameters only ScMoE has and for an early layer whose
//    gradient partly arrives through the shortcut;
//  - the training forward equals Model::forward for every position and gate;
//  - the config refuses what cannot work, naming the key;
//  - the operator-slot rule picks the slot its formula says.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "expect_error.h"
#include "finite_difference.h"
#include "model/config.h"
#include "model/model.h"
#include "model/overlap_schedule.h"
#include "synth/synthetic_checkpoint.h"
#include "temp_dir.h"
#include "train/params.h"
#include "train/train_model.h"

namespace sy {
namespace {

synth::SyntheticSpec scmoe_spec(const char* shortcut, const char* combine, int64_t top_k,
                                int64_t sparse_step) {
  synth::SyntheticSpec s;
  s.family = model::Family::kScMoe;
  s.dtype = "F32";
  s.tokenizer = "none";
  s.vocab_size = 61;
  s.hidden_size = 24;
  s.num_layers = 4;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.num_experts = 4;
  s.top_k = top_k;
  s.expert_ffn = 16;
  s.shared_ffn = std::string(shortcut) == "none" && std::string(combine) == "add" ? 0 : 20;
  s.dense_ffn = 32;
  s.sparse_step = sparse_step;
  s.first_dense_layers = sparse_step == 1 ? 1 : 0;
  s.scmoe_shortcut = shortcut;
  s.scmoe_combine = combine;
  return s;
}

struct Case {
  const char* shortcut;
  const char* combine;
  int64_t top_k, sparse_step;
};
std::string case_name(const Case& c) {
  return std::string(c.shortcut) + "_" + c.combine + "_k" + std::to_string(c.top_k) + "_step" +
         std::to_string(c.sparse_step);
}

const Case kCases[] = {{"pos1", "cg1", 1, 2}, {"pos2", "cg1", 1, 2}, {"pos3", "cg2", 2, 2},
                       {"pos2", "add", 1, 1}, {"pos3", "cg1", 1, 1}, {"none", "cg2", 1, 2}};

class ScMoeModel : public ::testing::TestWithParam<Case> {};

// Loss of the model as a function of its parameters; the random directions perturb one
// parameter at a time.
TEST_P(ScMoeModel, GradientMatchesFiniteDifferences) {
  const Case c = GetParam();
  testing::TempDir dir;
  synth::write_synthetic_checkpoint(scmoe_spec(c.shortcut, c.combine, c.top_k, c.sparse_step),
                                    dir.path());
  const model::ModelConfig cfg = model::load_config(dir.path());
  train::ParamSet params = train::load_params(dir.path());
  train::TrainModel tm(cfg, params);
  const int64_t B = 2, S = 7;
  std::mt19937 rng(5);
  std::vector<int32_t> tokens(size_t(B * S));
  for (auto& t : tokens) t = int32_t(rng() % uint32_t(cfg.vocab_size));
  train::LossOptions opt;
  opt.aux_coef = 0.05f;
  opt.z_coef = 0.01f;
  params.zero_grads();
  tm.forward_backward(tokens.data(), nullptr, B, S, opt);
  // Top-k routing is piecewise constant: a difference across a change of route measures the
  // jump, not the gradient. The loss reports whether any expert's count moved.
  auto routing = [&] {
    std::vector<int64_t> counts;
    for (int64_t l = 0; l < cfg.num_layers; ++l) {
      const auto& a = tm.layer_activations(int(l)).moe_act;
      counts.insert(counts.end(), a.counts.begin(), a.counts.end());
    }
    return counts;
  };
  const std::vector<int64_t> base_routing = routing();
  bool moved = false;
  auto loss = [&] {
    const double total = tm.evaluate(tokens.data(), nullptr, B, S, opt).total;
    moved |= routing() != base_routing;
    return total;
  };

  // The parameters ScMoE adds, and the first layer's attention (its gradient flows back through
  // the shortcuts of later layers as well as through the residual stream).
  std::vector<std::string> names = {
      "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight",
      "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.0.down_proj.weight"};
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    if (!cfg.layer_is_moe[size_t(l)]) continue;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    if (cfg.shortcut != model::Shortcut::kNone) names.push_back(p + "shortcut_layernorm.weight");
    if (cfg.shared_expert_gated) names.push_back(p + "mlp.shared_expert_gate.weight");
    if (cfg.branch_softmax_gate) names.push_back(p + "mlp.combine_gate.weight");
    if (cfg.shared_intermediate_size > 0) names.push_back(p + "mlp.shared_expert.up_proj.weight");
  }
  for (const std::string& name : names) {
    train::Param& p = params.get(name);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    bool checked = false;
    double h = 4e-3;
    for (int attempt = 0; attempt < 8 && !checked; ++attempt, h *= 0.6) {
      // Random, tilted towards the gradient so that it is never nearly orthogonal to it.
      double rms = 1e-30;
      for (float g : p.grad) rms += double(g) * g;
      rms = std::sqrt(rms / double(p.grad.size()));
      std::vector<float> dir_v(p.value.size());
      for (size_t i = 0; i < dir_v.size(); ++i) dir_v[i] = nd(rng) + 0.3f * float(p.grad[i] / rms);
      moved = false;
      const auto d = testing::directional_derivative(p.value, p.grad, dir_v, h, loss);
      if (moved) continue;  // a route changed: another direction, a smaller step
      EXPECT_TRUE(testing::directional_matches(d, p.value.size(), 2e-2))
          << case_name(c) << " " << name;
      checked = true;
    }
    EXPECT_TRUE(checked) << case_name(c) << " " << name << ": every step changed the routing";
  }
}

// Two float32 computations of the same logits (training's and inference's forward).
TEST_P(ScMoeModel, TrainingForwardEqualsInference) {
  const Case c = GetParam();
  testing::TempDir dir;
  synth::write_synthetic_checkpoint(scmoe_spec(c.shortcut, c.combine, c.top_k, c.sparse_step),
                                    dir.path());
  const model::Model m = model::Model::load(dir.path());
  const int64_t B = 2, S = 9, V = m.config().vocab_size;
  std::vector<int32_t> tokens(size_t(B * S));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 17 + 3) % size_t(V));
  std::vector<model::KvCache> caches;
  for (int64_t b = 0; b < B; ++b) caches.emplace_back(m.config(), S);
  std::vector<model::SequenceChunk> chunks;
  for (int64_t b = 0; b < B; ++b)
    chunks.push_back({&caches[size_t(b)], {tokens.data() + b * S, size_t(S)}});
  std::vector<float> inf(size_t(B * S * V));
  model::Workspace ws;
  m.forward(chunks, model::LogitsFor::kAllTokens, inf.data(), ws);
  train::ParamSet params = train::load_params(dir.path());
  train::TrainModel tm(m.config(), params);
  std::vector<float> trn;
  tm.evaluate(tokens.data(), nullptr, B, S, train::LossOptions{}, &trn);
  ASSERT_EQ(trn.size(), inf.size());
  double worst = 0, scale = 1;
  for (size_t i = 0; i < inf.size(); ++i) {
    worst = std::max(worst, std::abs(double(trn[i]) - inf[i]));
    scale = std::max(scale, std::abs(double(inf[i])));
  }
  EXPECT_LE(worst, 16 * 1.2e-7 * std::sqrt(24.0 * 4) * scale) << case_name(c);
}

INSTANTIATE_TEST_SUITE_P(Variants, ScMoeModel, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return case_name(info.param); });

// A decode step with the KV cache sees the same shortcut sources as the whole prefix did.
TEST(ScMoeModel, DecodeStepsEqualPrefill) {
  testing::TempDir dir;
  synth::write_synthetic_checkpoint(scmoe_spec("pos3", "cg2", 2, 1), dir.path());
  const model::Model m = model::Model::load(dir.path());
  const int64_t S = 8, V = m.config().vocab_size;
  std::vector<int32_t> tokens(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) tokens[size_t(i)] = int32_t((i * 29 + 5) % V);
  model::Workspace ws;
  model::KvCache whole(m.config(), S), stepwise(m.config(), S);
  std::vector<float> all(static_cast<size_t>(S * V)), one(static_cast<size_t>(V));
  model::SequenceChunk chunk{&whole, tokens};
  m.forward({&chunk, 1}, model::LogitsFor::kAllTokens, all.data(), ws);
  for (int64_t i = 0; i < S; ++i) {
    model::SequenceChunk step{&stepwise, {tokens.data() + i, 1}};
    m.forward({&step, 1}, model::LogitsFor::kLastToken, one.data(), ws);
    for (int64_t v = 0; v < V; ++v)
      ASSERT_NEAR(one[size_t(v)], all[size_t(i * V + v)], 2e-4) << "position " << i;
  }
}

std::string scmoe_config(const std::string& shortcut, const std::string& combine, int64_t shared,
                         int64_t step) {
  std::string j = R"({"architectures": ["ScMoeForCausalLM"], "vocab_size": 64, "hidden_size": 16,
    "num_hidden_layers": 4, "num_attention_heads": 2, "num_experts": 4, "num_experts_per_tok": 1,
    "moe_intermediate_size": 8, "intermediate_size": 16)";
  j += ", \"shared_expert_intermediate_size\": " + std::to_string(shared);
  j += ", \"decoder_sparse_step\": " + std::to_string(step);
  if (!shortcut.empty()) j += ", \"scmoe_shortcut\": \"" + shortcut + "\"";
  if (!combine.empty()) j += ", \"scmoe_combine\": \"" + combine + "\"";
  return j + "}";
}

TEST(ScMoeConfig, ReadsPositionsAndGates) {
  const model::ModelConfig c = model::parse_config(scmoe_config("pos2", "cg2", 8, 2), "cfg");
  EXPECT_EQ(c.shortcut, model::Shortcut::kPos2);
  EXPECT_TRUE(c.branch_softmax_gate);
  EXPECT_FALSE(c.shared_expert_gated);
  EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(c.shortcut_point(3), 5);  // layer 2's stream after its attention
  const model::ModelConfig p3 = model::parse_config(scmoe_config("pos3", "cg1", 8, 2), "cfg");
  EXPECT_EQ(p3.shortcut_point(3), 4);  // layer 2's input
  EXPECT_TRUE(p3.shared_expert_gated);
  EXPECT_EQ(model::parse_config(scmoe_config("pos1", "add", 8, 2), "cfg").shortcut_point(3), 6);
}

TEST(ScMoeConfig, RefusesWhatCannotWorkNamingTheKey) {
  using model::parse_config;
  using testing::expect_error;
  expect_error([] { parse_config(scmoe_config("pos4", "cg1", 8, 2), "cfg"); },
               {"cfg", "pos4", "none, pos1, pos2 or pos3"});
  expect_error([] { parse_config(scmoe_config("pos2", "cg3", 8, 2), "cfg"); },
               {"cfg", "scmoe_combine", "cg3"});
  expect_error([] { parse_config(scmoe_config("", "cg1", 8, 2), "cfg"); },
               {"missing required key 'scmoe_shortcut'"});
  expect_error([] { parse_config(scmoe_config("pos2", "", 8, 2), "cfg"); },
               {"missing required key 'scmoe_combine'"});
  expect_error([] { parse_config(scmoe_config("pos2", "cg1", 8, 1), "cfg"); },
               {"layer 0", "no preceding layer", "decoder_sparse_step"});
  expect_error([] { parse_config(scmoe_config("none", "cg1", 0, 2), "cfg"); },
               {"cg1", "shared_expert_intermediate_size is 0"});
  expect_error([] { parse_config(scmoe_config("pos1", "add", 0, 2), "cfg"); },
               {"pos1", "needs a shared expert"});
}

TEST(OverlapSchedule, PicksTheSlotThatBalancesBothExchanges) {
  const std::vector<double> ops = {3.0, 2.0, 1.0};  // e.g. MLP, attention, shared expert
  // Dispatch 3, combine 3: K=1 costs |3-3| + |3-3| = 0.
  EXPECT_EQ(model::choose_expert_slot(ops, 3.0, 3.0, true), 1);
  // A long dispatch: everything before the experts (K=3 costs |6-10| + |0-1| = 5, K=2 costs
  // |5-10| + |1-1| = 5; the first minimum wins).
  EXPECT_EQ(model::choose_expert_slot(ops, 10.0, 1.0, true), 2);
  // A long combine: experts first.
  EXPECT_EQ(model::choose_expert_slot(ops, 0.0, 8.0, true), 0);
  // Dispatch 5, combine 1: K=2 costs |5-5| + |1-1| = 0.
  EXPECT_EQ(model::choose_expert_slot(ops, 5.0, 1.0, true), 2);
  // Nothing measured yet: the middle slot, rounded up.
  EXPECT_EQ(model::choose_expert_slot(ops, 0.0, 0.0, false), 2);
  EXPECT_EQ(model::choose_expert_slot(std::vector<double>{}, 1.0, 1.0, true), 0);
}

}  // namespace
}  // namespace sy
