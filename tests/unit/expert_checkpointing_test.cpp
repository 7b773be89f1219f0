// Partial experts checkpointing against hand-computed cases: which experts each checkpoint saves
// (sequential rotation staggered across layers, load-aware order, never-saved experts first),
// which rank writes them, and the Proportion of Lost Tokens and dynamic K after a recovery.
#include <gtest/gtest.h>

#include "expect_error.h"
#include "train/expert_checkpointing.h"

namespace sy::train {
namespace {

using Selection = std::vector<std::vector<int>>;

model::ModelConfig two_moe_layers() {
  model::ModelConfig c;
  c.num_layers = 2;
  c.layer_is_moe = {true, true};
  c.router.num_experts = 4;
  c.router.top_k = 2;
  return c;
}

ParamSet params() {
  ParamSet p;
  p.add("model.embed_tokens.weight", {16, 4});
  for (int l = 0; l < 2; ++l) {
    p.add("model.layers." + std::to_string(l) + ".self_attn.q_proj.weight", {4, 4});
    for (int e = 0; e < 4; ++e)
      p.add(
           "model.layers." + std::to_string(l) + ".mlp.experts." + std::to_string(e) + ".w1.weight",
           {2, 4})
          .expert = true;
  }
  p.add("model.norm.weight", {4});
  return p;
}

ExpertCheckpointing make(int k, bool load_aware = false, int rank = 0, int ranks = 1) {
  PecConfig c;
  c.k = k;
  c.load_aware = load_aware;
  return ExpertCheckpointing(
      c, two_moe_layers(), params(), rank, ranks, [ranks](int e) { return ranks == 1 ? 0 : e / 2; },
      1000.0);
}

TEST(ExpertCheckpointing, SequentialSelectionRotatesStaggeredAcrossLayers) {
  ExpertCheckpointing pec = make(1);
  // Nothing saved yet: the first checkpoint holds every expert.
  EXPECT_EQ(pec.select(false), (Selection{{0, 1, 2, 3}, {0, 1, 2, 3}}));
  pec.committed(pec.select(false), {}, 5);
  // Checkpoint c saves expert (c + j) * K mod N of the j-th MoE layer.
  EXPECT_EQ(pec.select(false), (Selection{{1}, {2}}));
  pec.committed(pec.select(false), {}, 10);
  EXPECT_EQ(pec.select(false), (Selection{{2}, {3}}));
  EXPECT_EQ(pec.select(true), (Selection{{0, 1, 2, 3}, {0, 1, 2, 3}})) << "a full save";

  ExpertCheckpointing two = make(2);
  two.committed(two.select(false), {}, 5);
  EXPECT_EQ(two.select(false), (Selection{{2, 3}, {0, 1}}));
}

TEST(ExpertCheckpointing, LoadAwareSavesTheMostUnsavedFirst) {
  ExpertCheckpointing pec = make(1, true);
  pec.committed(pec.select(false), {}, 2);
  pec.count(0, {20, 40, 60, 80});
  pec.count(1, {7, 3, 9, 1});
  EXPECT_EQ(pec.select(false), (Selection{{3}, {2}}));
}

TEST(ExpertCheckpointing, EachRankWritesItsExpertsAndAShareOfTheRest) {
  ExpertCheckpointing r0 = make(1, false, 0, 2), r1 = make(1, false, 1, 2);
  const Selection s{{1}, {2}};
  std::vector<std::string> stems0, stems1, dense;
  for (const auto& g : r0.groups(s)) stems0.push_back(g.stem);
  for (const auto& g : r1.groups(s)) stems1.push_back(g.stem);
  // Expert 1 lives on rank 0, expert 2 on rank 1 (owner = e / 2).
  EXPECT_NE(std::find(stems0.begin(), stems0.end(), "L0-E1"), stems0.end());
  EXPECT_NE(std::find(stems1.begin(), stems1.end(), "L1-E2"), stems1.end());
  EXPECT_EQ(std::find(stems0.begin(), stems0.end(), "L1-E2"), stems0.end());
  // The dense tensors are split between the ranks, each exactly once.
  for (auto* r : {&r0, &r1})
    for (const auto& g : r->groups(s))
      if (g.stem.rfind("dense-", 0) == 0) dense.insert(dense.end(), g.names.begin(), g.names.end());
  std::sort(dense.begin(), dense.end());
  EXPECT_EQ(dense, (std::vector<std::string>{
                       "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                       "model.layers.1.self_attn.q_proj.weight", "model.norm.weight"}));
}

TEST(ExpertCheckpointing, PltAndDynamicKAfterARecovery) {
  ExpertCheckpointing pec = make(1);
  for (int step = 1; step <= 2; ++step) {
    pec.count(0, {10, 20, 30, 40});
    pec.count(1, {5, 5, 5, 5});
  }
  pec.committed(pec.select(false), {}, 2);  // the first, full checkpoint
  for (int step = 3; step <= 4; ++step) {
    pec.count(0, {10, 20, 30, 40});
    pec.count(1, {5, 5, 5, 5});
  }
  const Selection s = pec.select(false);
  ASSERT_EQ(s, (Selection{{1}, {2}}));
  const nlohmann::json state = pec.state_after(s, {}, 4);
  // Since step 2: layer 0 [20, 40, 60, 80], layer 1 [10, 10, 10, 10]; experts 0.1 and 1.2 saved.
  EXPECT_EQ(state["unsaved_slots"], nlohmann::json({{20, 0, 60, 80}, {10, 10, 0, 10}}));
  EXPECT_EQ(state["saved_step"], nlohmann::json({{2, 4, 2, 2}, {2, 2, 4, 2}}));

  // A fault after that checkpoint: the run restarts from it with 160 + 30 token-slots lost.
  ExpertCheckpointing restarted = make(1);
  const Recovery r = restarted.restore_and_recover(state);
  EXPECT_EQ(r.lost_slots, (std::vector<int64_t>{160, 30}));
  // PLT = 1/2 * (160 / 1000 + 30 / 1000): 1000 token-slots per layer in the run.
  EXPECT_DOUBLE_EQ(r.plt_added, 0.095);
  EXPECT_DOUBLE_EQ(restarted.plt(), 0.095);
  EXPECT_EQ(r.k_before, 1);
  EXPECT_EQ(r.k_after, 2) << "PLT above 3.75%: K doubles";
  // The restored experts are back at their saved state: nothing more to lose.
  EXPECT_EQ(restarted.state_after(restarted.select(true), {}, 4)["unsaved_slots"],
            nlohmann::json({{0, 0, 0, 0}, {0, 0, 0, 0}}));
  // A second recovery from the same checkpoint adds the same loss again.
  nlohmann::json again = state;
  again["plt"] = restarted.plt();
  again["k"] = restarted.k();
  ExpertCheckpointing third = make(1);
  EXPECT_DOUBLE_EQ(third.restore_and_recover(again).plt_total, 0.19);
  EXPECT_EQ(third.k(), 4);
}

TEST(ExpertCheckpointing, TwoLevelRecoveryLosesOnlyWhatTheSnapshotsMissed) {
  PecConfig c;
  c.k = 1;
  c.snapshot_k = 3;
  ExpertCheckpointing pec(
      c, two_moe_layers(), params(), 0, 1, [](int) { return 0; }, 1000.0);
  pec.committed(pec.select(false), {}, 2);  // the first, full checkpoint
  const Selection persisted = pec.select(false);
  ASSERT_EQ(persisted, (Selection{{1}, {2}}));
  // The persisted experts and the next ones in the rotation, 3 per layer.
  const Selection snap = pec.select_snapshot(persisted);
  EXPECT_EQ(snap, (Selection{{1, 2, 3}, {0, 2, 3}}));
  for (int step = 3; step <= 4; ++step) {
    pec.count(0, {10, 20, 30, 40});
    pec.count(1, {5, 5, 5, 5});
  }
  pec.committed(persisted, snap, 4);
  pec.count(0, {1, 1, 1, 1});  // step 5, then a checkpoint at 6 with its snapshot
  pec.count(1, {1, 1, 1, 1});
  const Selection p6 = pec.select(false), s6 = pec.select_snapshot(p6);
  ASSERT_EQ(p6, (Selection{{2}, {3}}));
  const nlohmann::json state = pec.state_after(p6, s6, 6);
  EXPECT_EQ(state["saved_step"], nlohmann::json({{2, 4, 6, 2}, {2, 2, 4, 6}}));
  // Snapshots at 4: {1, 2, 3} and {0, 2, 3}; at 6: {2, 3, 0} and {3, 0, 1}.
  EXPECT_EQ(state["snapshot_step"], nlohmann::json({{6, 4, 6, 6}, {6, 6, 4, 6}}));
  EXPECT_EQ(state["unsaved_slots"], nlohmann::json({{21, 1, 0, 81}, {11, 11, 1, 0}}));
  EXPECT_EQ(state["unsaved_since_snapshot"], nlohmann::json({{0, 1, 0, 0}, {0, 0, 1, 0}}));

  // Node kept: snapshots newer than storage are used (layer 0: experts 0 and 3; layer 1: 0 and
  // 1); the others lose their slots since their storage save (1 each, since step 4).
  ExpertCheckpointing kept(
      c, two_moe_layers(), params(), 0, 1, [](int) { return 0; }, 1000.0);
  kept.restore_state(state);
  const Recovery r = kept.recover({{true, false, false, true}, {true, true, false, false}});
  EXPECT_EQ(r.lost_slots, (std::vector<int64_t>{1, 1}));
  EXPECT_DOUBLE_EQ(r.plt_added, (1.0 / 1000 + 1.0 / 1000) / 2);
  // Node lost: every expert loses its slots since its storage save.
  ExpertCheckpointing lost(
      c, two_moe_layers(), params(), 0, 1, [](int) { return 0; }, 1000.0);
  EXPECT_EQ(lost.restore_and_recover(state).lost_slots, (std::vector<int64_t>{103, 23}));
}

TEST(ExpertCheckpointing, BadSettingsAndStatesAreClearErrors) {
  using sy::testing::expect_error;
  expect_error([] { make(5); }, {"--pec-k 5", "4 experts"});
  expect_error([] { make(-1); }, {"--pec-k must be at least 0"});
  ExpertCheckpointing pec = make(1);
  expect_error(
      [&] {
        pec.restore_and_recover({{"unsaved_slots", {{1, 2}}}});
      },
      {"pec.unsaved_slots", "2 MoE layers"});
}

}  // namespace
}  // namespace sy::train
