// Training checkpoints: a save/load round trip restores values, buffers, AdamW state and the
// trainer state (F32 bit for bit, BF16 rounded), the directory is a model directory that
// load_params opens; replacing a checkpoint leaves no temp or old directory; the states an
// interrupted save can leave behind (temp dir, old dir with or without the new one) all load a
// complete checkpoint; mismatched names and shapes are clear errors that change nothing; a
// directory that is not a checkpoint is never replaced.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "expect_error.h"
#include "io/file_util.h"
#include "io/safetensors.h"
#include "temp_dir.h"
#include "train/checkpoint.h"
#include "util/error.h"

namespace sy::train {
namespace {

using sy::testing::expect_error;

namespace fs = std::filesystem;
using sy::testing::TempDir;

// The model's shape: names only matter, not how a model is built from them.
ParamSet make_params(uint32_t seed) {
  ParamSet set;
  set.add("model.embed_tokens.weight", {8, 4});
  set.add("model.layers.0.mlp.gate.weight", {3, 4});
  set.add("model.norm.weight", {4});
  set.add("model.layers.0.mlp.gate.e_score_correction_bias", {3}).trainable = false;
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  for (Param& p : set.all()) {
    for (float& x : p.value) x = d(rng);
    for (float& x : p.grad) x = d(rng);
  }
  return set;
}

CheckpointContents contents(int64_t step) {
  CheckpointContents c;
  c.config_json = R"({"model_type": "dots1", "hidden_size": 4})";
  c.tokenizer_json = R"({"model": {"type": "BPE"}})";
  c.trainer_state = {
      {"step", step}, {"seed", 42}, {"data_position", 1234}, {"train_loss", {3.5, 3.1}}};
  return c;
}

// Siblings of `dir` other than itself: temp or old directories.
std::vector<std::string> siblings(const std::string& dir) {
  std::vector<std::string> out;
  const fs::path p(dir);
  for (const auto& e : fs::directory_iterator(p.parent_path()))
    if (e.path().filename() != p.filename()) out.push_back(e.path().filename().string());
  return out;
}

// A pid that no process has (a child that has exited and been reaped).
pid_t dead_pid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  return pid;
}

struct Trained {
  ParamSet params = make_params(1);
  AdamW opt;
  explicit Trained(int steps, uint32_t seed = 1) : params(make_params(seed)) {
    for (int s = 0; s < steps; ++s) opt.step(params, 1e-2);
  }
};

void expect_same(const ParamSet& a, const ParamSet& b) {
  for (const Param& p : a.all()) EXPECT_EQ(p.value, b.get(p.name).value) << p.name;
}

TEST(Checkpoint, RoundTrip) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained t(3);
  save_checkpoint(dir, t.params, t.opt, contents(3));
  for (const char* f : {"config.json", "tokenizer.json", "model.safetensors.index.json",
                        "w000001-all.safetensors", "m000001-all.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(dir) / f)) << f;
  EXPECT_EQ(io::read_text_file(dir + "/config.json"), contents(3).config_json);
  EXPECT_TRUE(siblings(dir).empty()) << "no temp dir left behind";

  ParamSet loaded = make_params(99);
  AdamW opt;
  const nlohmann::json state = load_checkpoint(dir, loaded, opt);
  expect_same(t.params, loaded);
  EXPECT_EQ(opt.step_count(), 3);
  for (const auto& [name, m] : t.opt.state()) {
    EXPECT_EQ(m.exp_avg, opt.state().at(name).exp_avg) << name;
    EXPECT_EQ(m.exp_avg_sq, opt.state().at(name).exp_avg_sq) << name;
  }
  EXPECT_EQ(state["step"], 3);
  EXPECT_EQ(state["data_position"], 1234);
  EXPECT_EQ(state["train_loss"], nlohmann::json({3.5, 3.1}));
  EXPECT_EQ(state["optimizer_step"], 3);

  // An inference-ready model directory: every Param, buffers included, by its checkpoint name.
  const ParamSet hf = load_params(dir);
  EXPECT_EQ(hf.size(), t.params.size());
  expect_same(t.params, hf);
}

TEST(Checkpoint, Bf16WeightsAndNoTokenizer) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained t(1);
  CheckpointContents c = contents(1);
  c.weights_dtype = DType::BF16;
  c.tokenizer_json.clear();
  save_checkpoint(dir, t.params, t.opt, c);
  EXPECT_FALSE(fs::exists(dir + "/tokenizer.json"));
  const io::TensorStore store = io::TensorStore::open(dir);
  EXPECT_EQ(store.get("model.norm.weight").dtype_name, "BF16");
  ParamSet loaded = make_params(5);
  AdamW opt;
  load_checkpoint(dir, loaded, opt);
  for (const Param& p : t.params.all())
    for (size_t i = 0; i < p.value.size(); ++i)
      EXPECT_EQ(loaded.get(p.name).value[i], bf16_to_f32(f32_to_bf16(p.value[i]))) << p.name;
  EXPECT_EQ(opt.state().at("model.norm.weight").exp_avg,
            t.opt.state().at("model.norm.weight").exp_avg)
      << "optimizer state stays F32";
}

TEST(Checkpoint, ReplaceIsAtomicAndLeavesNothingBehind) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained first(1, 1), second(2, 2);
  save_checkpoint(dir, first.params, first.opt, contents(1));
  save_checkpoint(dir + "/", second.params, second.opt,
                  contents(2));  // a trailing '/' names the same
  EXPECT_TRUE(siblings(dir).empty());
  EXPECT_FALSE(fs::exists(dir + "/trainer_state.json.tmp")) << "nothing nested inside";
  // The first save's shards are gone once the second one committed.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 6);
  EXPECT_TRUE(fs::exists(dir + "/w000002-all.safetensors"));
  ParamSet loaded = make_params(7);
  AdamW opt;
  EXPECT_EQ(load_checkpoint(dir, loaded, opt)["step"], 2);
  expect_same(second.params, loaded);
}

TEST(Checkpoint, InterruptedSavesLeaveACompleteCheckpoint) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained first(1, 1), second(2, 2);
  save_checkpoint(dir, first.params, first.opt, contents(1));
  const std::string pid = std::to_string(dead_pid());

  // (1) Killed while writing the temp dir: <dir> is untouched; the temp dir is removed next time.
  fs::create_directory(dir + ".tmp-" + pid);
  io::write_text_file_atomic(dir + ".tmp-" + pid + "/model.safetensors", "half a file");
  ParamSet loaded = make_params(7);
  AdamW opt;
  EXPECT_EQ(load_checkpoint(dir, loaded, opt)["step"], 1);
  expect_same(first.params, loaded);
  EXPECT_TRUE(siblings(dir).empty()) << "stale temp dir removed";

  // (2) Killed between "dir -> old" and "temp -> dir": the old checkpoint is renamed back.
  save_checkpoint(tmp.file("new"), second.params, second.opt, contents(2));
  fs::rename(dir, dir + ".old-" + pid);
  fs::rename(tmp.file("new"), dir + ".tmp-" + pid);
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_EQ(load_checkpoint(dir, loaded, opt)["step"], 1) << "the last complete checkpoint";
  expect_same(first.params, loaded);
  EXPECT_TRUE(siblings(dir).empty());

  // (3) Killed before removing the old one: the new checkpoint is in place, the old is removed.
  fs::copy(dir, dir + ".old-" + pid, fs::copy_options::recursive);
  save_checkpoint(tmp.file("new"), second.params, second.opt, contents(2));
  fs::remove_all(dir);
  fs::rename(tmp.file("new"), dir);
  EXPECT_EQ(load_checkpoint(dir, loaded, opt)["step"], 2);
  expect_same(second.params, loaded);
  EXPECT_TRUE(siblings(dir).empty());

  // A save after any of them works and cleans up too.
  fs::create_directory(dir + ".tmp-" + pid);
  save_checkpoint(dir, first.params, first.opt, contents(1));
  EXPECT_TRUE(siblings(dir).empty());

  // Siblings of a live process (this test's parent stands in for a concurrent trainer) stay.
  const std::string live = dir + ".tmp-" + std::to_string(getppid());
  fs::create_directory(live);
  save_checkpoint(dir, first.params, first.opt, contents(1));
  EXPECT_TRUE(fs::exists(live));
}

TEST(Checkpoint, MismatchIsAClearErrorAndChangesNothing) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained t(2);
  save_checkpoint(dir, t.params, t.opt, contents(2));

  auto check = [&](ParamSet target, const std::vector<std::string>& needles) {
    const ParamSet before = target;
    AdamW opt;
    expect_error([&] { load_checkpoint(dir, target, opt); }, needles);
    expect_same(before, target);
    EXPECT_EQ(opt.step_count(), 0);
  };
  ParamSet reshaped;
  reshaped.add("model.embed_tokens.weight", {4, 8});
  reshaped.add("model.layers.0.mlp.gate.weight", {3, 4});
  reshaped.add("model.norm.weight", {4});
  reshaped.add("model.layers.0.mlp.gate.e_score_correction_bias", {3}).trainable = false;
  check(reshaped, {"model.embed_tokens.weight", "[8, 4]", "[4, 8]"});

  ParamSet more = make_params(3);
  more.add("lm_head.weight", {8, 4});
  check(more, {"lacks parameter 'lm_head.weight'", "[8, 4]"});

  ParamSet fewer;
  fewer.add("model.embed_tokens.weight", {8, 4});
  fewer.add("model.layers.0.mlp.gate.weight", {3, 4});
  fewer.add("model.norm.weight", {4});
  check(fewer, {"tensor 'model.layers.0.mlp.gate.e_score_correction_bias'", "the model lacks"});

  // A trainable flag that differs changes which moments the optimizer file must hold.
  ParamSet unfrozen = make_params(3);
  unfrozen.get("model.layers.0.mlp.gate.e_score_correction_bias").trainable = true;
  check(unfrozen, {"optimizer state of 'model.layers.0.mlp.gate.e_score_correction_bias'"});

  // A manifest that names a shard it does not list.
  nlohmann::json state = nlohmann::json::parse(io::read_text_file(dir + "/trainer_state.json"));
  state["checkpoint"]["weights"]["model.norm.weight"] = "w000009-all.safetensors";
  io::write_text_file_atomic(dir + "/trainer_state.json", state.dump());
  check(make_params(3), {"parameter 'model.norm.weight'", "w000009-all", "does not list"});

  expect_error(
      [&] {
        ParamSet p = make_params(3);
        AdamW opt;
        load_checkpoint(tmp.file("missing"), p, opt);
      },
      {"missing", "does not exist"});
}

TEST(Checkpoint, BadSaveInputIsAClearErrorAndKeepsTheOldOne) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained t(1);
  save_checkpoint(dir, t.params, t.opt, contents(1));
  const std::string before = io::read_text_file(dir + "/trainer_state.json");

  CheckpointContents bad = contents(2);
  bad.config_json = "{not json";
  expect_error([&] { save_checkpoint(dir, t.params, t.opt, bad); },
               {"config.json", "not valid JSON"});
  bad = contents(2);
  bad.config_json = "[1, 2]";
  expect_error([&] { save_checkpoint(dir, t.params, t.opt, bad); },
               {"config.json must be a JSON object"});
  bad = contents(2);
  bad.trainer_state = 5;
  expect_error([&] { save_checkpoint(dir, t.params, t.opt, bad); },
               {"trainer state must be a JSON object"});
  bad = contents(2);
  bad.weights_dtype = DType::F16;
  expect_error([&] { save_checkpoint(dir, t.params, t.opt, bad); }, {"F16", "F32 or BF16"});
  expect_error([&] { save_checkpoint(tmp.file("no/such/ckpt"), t.params, t.opt, contents(1)); },
               {"does not exist"});
  EXPECT_EQ(io::read_text_file(dir + "/trainer_state.json"), before);
  EXPECT_TRUE(siblings(dir).empty());

  // Never replace a directory that is not a training checkpoint (a source model, say).
  const std::string model = tmp.file("model");
  fs::create_directory(model);
  io::write_text_file_atomic(model + "/config.json", "{}");
  expect_error([&] { save_checkpoint(model, t.params, t.opt, contents(1)); },
               {"refusing to replace", "trainer_state.json"});
  EXPECT_TRUE(fs::exists(model + "/config.json"));
  EXPECT_FALSE(fs::exists(model + "/model.safetensors"));
  // An empty directory may be used.
  fs::create_directory(tmp.file("empty"));
  save_checkpoint(tmp.file("empty"), t.params, t.opt, contents(1));
  EXPECT_TRUE(fs::exists(tmp.file("empty/trainer_state.json")));
}

// Runs checkpointed before the sharded layout (model.safetensors + optimizer.safetensors) resume,
// and their next save converts them.
TEST(Checkpoint, LoadsAndConvertsTheEarlierLayout) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  fs::create_directory(dir);
  Trained t(2);
  std::vector<io::TensorToWrite> tensors;
  for (const Param& p : t.params.all())
    tensors.push_back({p.name, "F32", p.shape, p.value.data(), p.value.size() * 4});
  io::write_safetensors(dir + "/model.safetensors", tensors);
  t.opt.save(dir + "/optimizer.safetensors", t.params);
  io::write_text_file_atomic(dir + "/config.json", contents(2).config_json);
  io::write_text_file_atomic(dir + "/trainer_state.json",
                             R"({"step": 2, "optimizer_step": 2, "seed": 42})");
  ParamSet loaded = make_params(9);
  AdamW opt;
  EXPECT_EQ(load_checkpoint(dir, loaded, opt)["step"], 2);
  expect_same(t.params, loaded);
  EXPECT_EQ(opt.state().at("model.norm.weight").exp_avg_sq,
            t.opt.state().at("model.norm.weight").exp_avg_sq);
  save_checkpoint(dir, loaded, opt, contents(3));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors")) << "replaced by the shards";
  EXPECT_FALSE(fs::exists(dir + "/optimizer.safetensors"));
  ParamSet again = make_params(4);
  EXPECT_EQ(load_checkpoint(dir, again, opt)["step"], 3);
  expect_same(t.params, again);
}

TEST(Checkpoint, CorruptOrMissingShardsAreRefused) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained t(2);
  save_checkpoint(dir, t.params, t.opt, contents(2));
  auto load_fails = [&](const std::vector<std::string>& needles) {
    ParamSet p = make_params(9);
    const ParamSet before = p;
    AdamW opt;
    expect_error([&] { load_checkpoint(dir, p, opt); }, needles);
    expect_same(before, p);
  };
  const std::string w = dir + "/w000001-all.safetensors", m = dir + "/m000001-all.safetensors";
  const std::string good = io::read_text_file(w);
  std::string bad = good;
  bad[bad.size() - 3] ^= 0x10;  // one bit of one weight: the header still parses
  io::write_text_file_atomic(w, bad);
  load_fails({"w000001-all.safetensors", "corrupt", "CRC-32"});
  io::write_text_file_atomic(w, good.substr(0, good.size() - 4));
  load_fails({"w000001-all.safetensors", "corrupt", std::to_string(good.size() - 4) + " bytes"});
  io::write_text_file_atomic(w, good);
  fs::remove(m);
  load_fails({"m000001-all.safetensors", "missing"});
}

// Group "a": the embedding; "b": everything else.
std::vector<ShardGroup> two_groups(const ParamSet& params, bool with_a, bool with_b) {
  std::vector<ShardGroup> g;
  if (with_a) g.push_back({"a", {"model.embed_tokens.weight"}});
  if (with_b) {
    g.push_back({"b", {}});
    for (const Param& p : params.all())
      if (p.name != "model.embed_tokens.weight") g.back().names.push_back(p.name);
  }
  return g;
}

TEST(Checkpoint, PartialSavesKeepTheNewestStateOfEveryGroup) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained first(1, 1), second(2, 2);
  // A partial save needs an earlier save of what it leaves out.
  expect_error(
      [&] {
        save_checkpoint(dir, first.params, first.opt, contents(1),
                        two_groups(first.params, true, false));
      },
      {"no save so far holds parameter 'model.layers.0.mlp.gate.weight'"});
  save_checkpoint(dir, first.params, first.opt, contents(1), two_groups(first.params, true, true));
  save_checkpoint(dir, second.params, second.opt, contents(2),
                  two_groups(second.params, true, false));
  EXPECT_FALSE(fs::exists(dir + "/w000001-a.safetensors")) << "superseded";
  EXPECT_TRUE(fs::exists(dir + "/w000001-b.safetensors")) << "still the newest state of b";

  ParamSet loaded = make_params(7);
  AdamW opt;
  const nlohmann::json state = load_checkpoint(dir, loaded, opt);
  EXPECT_EQ(state["step"], 2);
  EXPECT_EQ(opt.step_count(), 2);
  for (const Param& p : loaded.all()) {
    const bool a = p.name == "model.embed_tokens.weight";
    EXPECT_EQ(p.value, (a ? second : first).params.get(p.name).value) << p.name;
    EXPECT_EQ(state["checkpoint"]["saved_step"][p.name], a ? 2 : 1) << p.name;
    if (p.trainable) {
      EXPECT_EQ(opt.state().at(p.name).exp_avg,
                (a ? second : first).opt.state().at(p.name).exp_avg);
    }
  }
  // Inference sees the same assembled model through the index.
  const ParamSet hf = load_params(dir);
  expect_same(loaded, hf);

  // A save that never committed (shards written, no manifest) changes nothing and is cleaned up.
  io::write_text_file_atomic(dir + "/w000003-a.safetensors", "crashed before the commit");
  ParamSet again = make_params(8);
  EXPECT_EQ(load_checkpoint(dir, again, opt)["step"], 2);
  expect_same(loaded, again);
  save_checkpoint(dir, second.params, second.opt, contents(2),
                  two_groups(second.params, false, true));
  EXPECT_FALSE(fs::exists(dir + "/w000003-a.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/w000001-b.safetensors"));
}

// Two ranks as two threads: gather and broadcast over a shared board with a barrier.
class ThreadComm {
 public:
  SaveComm for_rank(int rank) {
    SaveComm c;
    c.rank = rank;
    c.size = 2;
    c.gather = [this, rank](const std::string& s) {
      slots_[size_t(rank)] = s;
      barrier();
      std::vector<std::string> out = rank == 0 ? slots_ : std::vector<std::string>{};
      barrier();
      return out;
    };
    c.broadcast = [this, rank](std::string& s) {
      if (rank == 0) root_ = s;
      barrier();
      s = root_;
      barrier();
    };
    return c;
  }

 private:
  void barrier() {
    std::unique_lock<std::mutex> lock(mutex_);
    const int gen = generation_;
    if (++arrived_ == 2) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0, generation_ = 0;
  std::vector<std::string> slots_ = std::vector<std::string>(2);
  std::string root_;
};

// Each rank writes its groups; returns each rank's error message ("" when it succeeded).
std::vector<std::string> save_on_two_ranks(const std::string& dir, const Trained& t,
                                           const CheckpointContents& c,
                                           const std::vector<std::vector<ShardGroup>>& groups) {
  ThreadComm comm;
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      try {
        save_checkpoint(dir, t.params, t.opt, c, groups[size_t(r)], comm.for_rank(r));
      } catch (const Error& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& th : ranks) th.join();
  return errors;
}

TEST(Checkpoint, RanksWriteTheirShareAndOneRanksFailureFailsTheSaveEverywhere) {
  TempDir tmp;
  const std::string dir = tmp.file("ckpt");
  Trained first(1, 1), second(2, 2);
  auto split = [](const ParamSet& p) {
    return std::vector<std::vector<ShardGroup>>{two_groups(p, true, false),
                                                two_groups(p, false, true)};
  };
  ASSERT_EQ(save_on_two_ranks(dir, first, contents(1), split(first.params)),
            (std::vector<std::string>{"", ""}));
  EXPECT_TRUE(fs::exists(dir + "/w000001-a.safetensors")) << "rank 0's";
  EXPECT_TRUE(fs::exists(dir + "/w000001-b.safetensors")) << "rank 1's";
  ParamSet loaded = make_params(5);
  AdamW opt;
  EXPECT_EQ(load_checkpoint(dir, loaded, opt)["step"], 1);
  expect_same(first.params, loaded);

  // Rank 1 cannot write (an invalid group): both ranks fail, nothing of the save stays, and the
  // committed checkpoint is still the first one.
  auto bad = split(second.params);
  bad[1][0].stem = "not/a/stem";
  const std::vector<std::string> errors = save_on_two_ranks(dir, second, contents(2), bad);
  for (const std::string& e : errors) {
    EXPECT_NE(e.find("rank 1"), std::string::npos) << e;
    EXPECT_NE(e.find("not/a/stem"), std::string::npos) << e;
  }
  EXPECT_FALSE(fs::exists(dir + "/w000002-a.safetensors")) << "rank 0's shard of the failed save";
  EXPECT_EQ(load_checkpoint(dir, loaded, opt)["step"], 1);
  expect_same(first.params, loaded);
}

}  // namespace
}  // namespace sy::train
