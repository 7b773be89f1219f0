// Target: a training checkpoint directory as `train --resume` reads it. The first input byte
// picks the file the rest replaces (config.json, the weights shard, the moments shard, the
// manifest trainer_state.json); the others stay those of a valid checkpoint of the same model.
// A mutated shard gets its true size and CRC-32 in the manifest, so the mutant reaches the
// shard's parser instead of stopping at the checksum.
#include <array>
#include <filesystem>

#include "model/config.h"
#include "scratch.h"
#include "target.h"
#include "train/checkpoint.h"
#include "train/expert_checkpointing.h"
#include "train/init.h"
#include "train/trainer.h"
#include "util/crc32.h"

namespace sy::fuzz {
namespace {

constexpr std::array<const char*, 4> kFiles = {"config.json", "w000001-all.safetensors",
                                               "m000001-all.safetensors", "trainer_state.json"};
constexpr size_t kManifest = 3;

const nlohmann::json& identity() {
  static const nlohmann::json id = {{"seed", 7}, {"batch", 2}, {"seq", 8}};
  return id;
}

struct Base {
  train::FreshModel model;
  model::ModelConfig config;
  std::array<std::string, kFiles.size()> files;  // the valid checkpoint's bytes
};

const Base& base() {
  static const Base b = [] {
    synth::SyntheticSpec spec;
    spec.hidden_size = 8;
    spec.num_heads = 2;
    spec.num_kv_heads = 1;
    spec.num_experts = 2;  // few tensors: the loader's logic, not the header parser, is fuzzed here
    spec.top_k = 1;
    spec.expert_ffn = 4;
    spec.num_layers = 1;
    spec.vocab_size = 16;
    spec.tokenizer = "none";
    Base out{train::fresh_model(spec, 0, 1), {}, {}};
    out.config = model::parse_config(out.model.config_json, "config.json");
    train::AdamW opt;
    train::CheckpointContents c;
    c.config_json = out.model.config_json;
    // A partial-experts state as a run with --pec-k 1 writes it, after some counted steps.
    train::PecConfig pc;
    pc.k = 1;
    train::ExpertCheckpointing pec(
        pc, out.config, out.model.params, 0, 1, [](int) { return 0; }, 1000.0);
    pec.count(0, {7, 9});
    const auto sel = pec.select(false);
    c.trainer_state = {{"step", 3},
                       {"elapsed_s", 1.5},
                       {"identity", identity()},
                       {"pec", pec.state_after(sel, {}, 3)}};
    const std::string dir = scratch_dir() + "/base-checkpoint";
    train::save_checkpoint(dir, out.model.params, opt, c);
    for (size_t i = 0; i < kFiles.size(); ++i) out.files[i] = read_file(dir + "/" + kFiles[i]);
    return out;
  }();
  return b;
}

}  // namespace

void run_one(std::string_view bytes) {
  if (bytes.empty()) return;
  const Base& b = base();
  const size_t which = uint8_t(bytes[0]) % kFiles.size();
  const std::string dir = scratch_dir() + "/checkpoint";
  std::filesystem::create_directories(dir);
  const std::string_view mutant = bytes.substr(1);
  std::string manifest = b.files[kManifest];
  if (which == 1 || which == 2) {
    nlohmann::json m = nlohmann::json::parse(manifest);
    m["checkpoint"]["files"][kFiles[which]] = {{"bytes", mutant.size()},
                                               {"crc32", crc32(mutant.data(), mutant.size())}};
    manifest = m.dump();
  }
  for (size_t i = 0; i < kFiles.size(); ++i)
    write_file_in(dir, kFiles[i],
                  i == which       ? mutant
                  : i == kManifest ? std::string_view(manifest)
                                   : std::string_view(b.files[i]));
  train::ParamSet params = b.model.params;
  train::AdamW optimizer;
  const nlohmann::json state = train::load_checkpoint(dir, params, optimizer);
  (void)train::resume_point(state, identity(), dir);
  if (state.contains("pec")) {  // the partial-experts bookkeeping a resumed run restores
    train::ExpertCheckpointing pec(
        {}, b.config, params, 0, 1, [](int) { return 0; }, 1000.0);
    (void)pec.restore_and_recover(state["pec"]);
  }
}

void write_seeds(const std::string& dir) {
  const Base& b = base();
  for (size_t i = 0; i < kFiles.size(); ++i)
    write_seed(dir, kFiles[i], std::string(1, char(i)) + b.files[i]);
}

}  // namespace sy::fuzz
