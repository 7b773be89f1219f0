// Saving a sharded checkpoint (train/checkpoint.h): each rank's shards, then rank 0's commit.
#include <algorithm>
#include <cctype>
#include <set>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/checkpoint_layout.h"
#include "util/crc32.h"
#include "util/error.h"
#include "util/json_bounded.h"

namespace sy::train {

using namespace layout;

namespace {

bool valid_stem(const std::string& stem) {
  if (stem.empty() || stem.size() > 48) return false;
  return std::all_of(stem.begin(), stem.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

std::string shard_name(char kind, int64_t save, const std::string& stem) {
  return fmt::format("{}{:06}-{}.safetensors", kind, save, stem);
}

// A world of one: gather returns the one string, broadcast leaves it.
SaveComm complete(const SaveComm& c) {
  SaveComm out = c;
  if (!out.gather) out.gather = [](const std::string& s) { return std::vector<std::string>{s}; };
  if (!out.broadcast) out.broadcast = [](std::string&) {};
  return out;
}

// Runs `f` on this rank; its error message ("" when it succeeded).
template <typename F>
std::string attempt(F&& f) {
  try {
    f();
    return "";
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected error: ") + e.what();
  }
}

// Weights or moments of one group, as the bytes of a safetensors file.
std::string group_bytes(const ParamSet& params, const AdamW& optimizer, const ShardGroup& g,
                        DType dtype, bool moments, std::vector<std::string>& saved) {
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<uint16_t>> bf16;
  std::vector<std::vector<float>> zeros;
  bf16.reserve(g.names.size());
  zeros.reserve(g.names.size());
  for (const std::string& name : g.names) {
    const Param& p = params.get(name);
    if (!moments) {
      if (dtype == DType::F32) {
        tensors.push_back({p.name, "F32", p.shape, p.value.data(), p.value.size() * 4});
      } else {
        auto& bits = bf16.emplace_back(p.value.size());
        for (size_t i = 0; i < bits.size(); ++i) bits[i] = f32_to_bf16(p.value[i]);
        tensors.push_back({p.name, "BF16", p.shape, bits.data(), bits.size() * 2});
      }
      saved.push_back(name);
      continue;
    }
    if (!p.trainable) continue;
    const auto it = optimizer.state().find(name);
    const std::vector<float>* m = nullptr;
    const std::vector<float>* v = nullptr;
    if (it != optimizer.state().end() && !it->second.exp_avg.empty()) {
      m = &it->second.exp_avg;
      v = &it->second.exp_avg_sq;
    } else {
      m = v = &zeros.emplace_back(p.value.size(), 0.0f);  // not stepped yet
    }
    tensors.push_back({p.name + ".exp_avg", "F32", p.shape, m->data(), m->size() * 4});
    tensors.push_back({p.name + ".exp_avg_sq", "F32", p.shape, v->data(), v->size() * 4});
    saved.push_back(name);
  }
  if (tensors.empty()) return "";
  return io::serialize_safetensors(tensors, {{"format", "pt"}});
}

// The manifest's "checkpoint" section of `dir`, or an empty one (no checkpoint, or the earlier
// layout, which a new save replaces as a whole).
nlohmann::json previous_section(const fs::path& dir) {
  const fs::path path = dir / kStateFile;
  if (!fs::exists(path)) return nlohmann::json::object();
  const nlohmann::json state =
      parse_json_bounded(io::read_text_file(path.string()), fmt::format("'{}'", path.string()));
  if (!state.is_object() || !state.contains("checkpoint")) return nlohmann::json::object();
  return state["checkpoint"];
}

// True when `dir` is empty or holds only what a first save that never committed writes (some
// of this layout's shards, and perhaps its config, tokenizer and index).
bool first_save_interrupted(const fs::path& dir) {
  bool empty = true, shards = false;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    empty = false;
    shards = shards || is_shard_file(name);
    if (!is_shard_file(name) && name != "config.json" && name != "tokenizer.json" &&
        name != kIndexFile)
      return false;
  }
  return empty || shards;
}

// Rank 0's checks before anyone writes: the directory is (or becomes) a checkpoint. Returns the
// number of this save.
int64_t prepare_dir(const std::string& dir_arg, const fs::path& dir) {
  const fs::path parent = dir.parent_path();
  if (!fs::is_directory(parent))
    fail("checkpoint '{}': the directory '{}' does not exist", dir_arg, parent.string());
  recover_checkpoint_dir(dir.string());
  if (fs::exists(dir)) {
    if (!fs::is_directory(dir)) fail("checkpoint '{}' exists and is not a directory", dir_arg);
    if (!fs::exists(dir / kStateFile) && !first_save_interrupted(dir))
      fail(
          "refusing to replace '{}': it is not a training checkpoint (no {}); choose another "
          "directory",
          dir_arg, kStateFile);
  } else {
    fs::create_directory(dir);
  }
  const nlohmann::json prev = previous_section(dir);
  const int64_t last =
      prev.contains("save") && prev["save"].is_number_unsigned() ? prev["save"].get<int64_t>() : 0;
  if (last >= 999999) fail("checkpoint '{}' has had {} saves: start a new --out", dir_arg, last);
  return last + 1;
}

// This rank's shards of save `save`: written and fsync'd; what they hold, for rank 0.
nlohmann::json write_groups(const fs::path& dir, int64_t save, const ParamSet& params,
                            const AdamW& optimizer, const std::vector<ShardGroup>& groups,
                            DType dtype, SaveStats& stats) {
  nlohmann::json files = nlohmann::json::object(), weights = nlohmann::json::object(),
                 moments = nlohmann::json::object();
  for (const ShardGroup& g : groups) {
    for (const bool is_moments : {false, true}) {
      std::vector<std::string> saved;
      const std::string bytes = group_bytes(params, optimizer, g, dtype, is_moments, saved);
      if (bytes.empty()) continue;
      const std::string name = shard_name(is_moments ? 'm' : 'w', save, g.stem);
      io::write_file_atomic((dir / name).string(), bytes.data(), bytes.size());
      files[name] = {{"bytes", bytes.size()}, {"crc32", crc32(bytes.data(), bytes.size())}};
      for (const std::string& n : saved) (is_moments ? moments : weights)[n] = name;
      (is_moments ? stats.moment_bytes : stats.weight_bytes) += int64_t(bytes.size());
      ++stats.files;
    }
  }
  return {{"files", files}, {"weights", weights}, {"moments", moments}};
}

// Rank 0: the new manifest section from the previous one and every rank's report; checks that
// every Param has a saved value and every trainable one its moments.
nlohmann::json merge_section(const std::string& dir_arg, nlohmann::json prev,
                             const std::vector<nlohmann::json>& reports, int64_t save, int64_t step,
                             const ParamSet& params) {
  for (const char* key : {"files", "weights", "moments", "saved_step"})
    if (!prev.contains(key) || !prev[key].is_object()) prev[key] = nlohmann::json::object();
  for (const nlohmann::json& r : reports) {
    for (const auto& [name, info] : r["files"].items()) prev["files"][name] = info;
    for (const auto& [param, file] : r["weights"].items()) {
      prev["weights"][param] = file;
      prev["saved_step"][param] = step;
    }
    for (const auto& [param, file] : r["moments"].items()) prev["moments"][param] = file;
  }
  nlohmann::json out = {{"format", kFormat},
                        {"save", save},
                        {"files", nlohmann::json::object()},
                        {"weights", nlohmann::json::object()},
                        {"moments", nlohmann::json::object()},
                        {"saved_step", nlohmann::json::object()}};
  auto keep_file = [&](const std::string& file) { out["files"][file] = prev["files"][file]; };
  for (const Param& p : params.all()) {
    if (!prev["weights"].contains(p.name))
      fail(
          "checkpoint '{}': no save so far holds parameter '{}' (a partial save needs an earlier "
          "one with every tensor)",
          dir_arg, p.name);
    out["weights"][p.name] = prev["weights"][p.name];
    out["saved_step"][p.name] = prev["saved_step"][p.name];
    keep_file(prev["weights"][p.name]);
    if (prev["moments"].contains(p.name)) {
      out["moments"][p.name] = prev["moments"][p.name];
      keep_file(prev["moments"][p.name]);
    } else if (p.trainable || p.expert) {
      fail("checkpoint '{}': no save so far holds the optimizer state of '{}'", dir_arg, p.name);
    }
  }
  return out;
}

// Rank 0: removes shards the committed manifest does not name (an older save's, or those of a
// save that never committed) and the files of the earlier layout.
void collect_garbage(const fs::path& dir, const nlohmann::json& section) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool legacy = name == "model.safetensors" || name == "optimizer.safetensors";
    if ((legacy || is_shard_file(name)) && !section["files"].contains(name))
      fs::remove(e.path(), ec);
  }
}

void remove_save(const fs::path& dir, int64_t save) {
  const std::string tag = fmt::format("{:06}-", save);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (is_shard_file(name) && name.compare(1, tag.size(), tag) == 0) fs::remove(e.path(), ec);
  }
}

void commit_manifest(const std::string& dir_arg, const fs::path& dir, const CheckpointContents& c,
                     int64_t save, int64_t optimizer_step,
                     const std::vector<std::string>& reports_text, const ParamSet& params,
                     SaveStats& stats) {
  std::vector<nlohmann::json> reports;
  for (const std::string& text : reports_text) {
    reports.push_back(nlohmann::json::parse(text));
    if (reports.back().contains("error")) fail("{}", reports.back()["error"].get<std::string>());
  }
  for (const auto& r : reports) {
    int64_t bytes = 0;
    for (const auto& [name, info] : r["files"].items()) bytes += info["bytes"].get<int64_t>();
    stats.rank_bytes.push_back(bytes);
    stats.total_bytes += bytes;
  }
  const int64_t step = c.trainer_state.contains("step") && c.trainer_state["step"].is_number()
                           ? c.trainer_state["step"].get<int64_t>()
                           : optimizer_step;
  const nlohmann::json section =
      merge_section(dir_arg, previous_section(dir), reports, save, step, params);
  // Unchanged texts (the usual case: the same run) are not rewritten: two fsyncs fewer per save.
  auto write_if_changed = [&](const char* name, const std::string& text) {
    const fs::path path = dir / name;
    std::error_code ec;
    if (fs::is_regular_file(path, ec) && fs::file_size(path, ec) == text.size() &&
        io::read_text_file(path.string()) == text)
      return;
    io::write_text_file_atomic(path.string(), text);
  };
  write_if_changed("config.json", c.config_json);
  if (!c.tokenizer_json.empty()) write_if_changed("tokenizer.json", c.tokenizer_json);
  int64_t total = 0;
  for (const auto& [file, info] : section["files"].items())
    if (file[0] == 'w') total += info["bytes"].get<int64_t>();
  const nlohmann::json index = {{"metadata", {{"total_size", total}}},
                                {"weight_map", section["weights"]}};
  io::write_text_file_atomic((dir / kIndexFile).string(), index.dump(2) + "\n");
  nlohmann::json state = c.trainer_state;
  state["optimizer_step"] = optimizer_step;
  state["checkpoint"] = section;
  io::write_text_file_atomic((dir / kStateFile).string(), state.dump(1) + "\n");  // the commit
  fsync_dir(dir);
  collect_garbage(dir, section);
}

}  // namespace

CheckpointSave::CheckpointSave(const std::string& dir, CheckpointContents contents,
                               std::vector<ShardGroup> groups, const ParamSet& params,
                               const SaveComm& comm)
    : dir_arg_(dir),
      dir_(checkpoint_path(dir).string()),
      contents_(std::move(contents)),
      groups_(std::move(groups)),
      comm_(complete(comm)) {
  const CheckpointContents& c = contents_;
  // Validate this rank's inputs; every rank learns whether rank 0 could prepare the directory
  // before anyone writes into it.
  error_ = attempt([&] {
    if (c.weights_dtype != DType::F32 && c.weights_dtype != DType::BF16)
      fail("checkpoint '{}': weights dtype {} is not supported (F32 or BF16)", dir_arg_,
           dtype_name(c.weights_dtype));
    if (!c.trainer_state.is_object())
      fail("checkpoint '{}': the trainer state must be a JSON object, not {}", dir_arg_,
           c.trainer_state.type_name());
    std::set<std::string> stems;
    for (const ShardGroup& g : groups_) {
      if (!valid_stem(g.stem) || !stems.insert(g.stem).second)
        fail("checkpoint '{}': shard group name {} is not valid or not unique", dir_arg_,
             excerpt_text(g.stem, 60));
      for (const std::string& n : g.names)
        if (!params.find(n)) fail("checkpoint '{}': no parameter '{}' to save", dir_arg_, n);
    }
  });
  std::string plan = "{}";
  if (comm_.rank == 0) {
    int64_t save = 0;
    if (error_.empty())
      error_ = attempt([&] {
        if (!parse_json_bounded(c.config_json,
                                fmt::format("checkpoint '{}': config.json", dir_arg_))
                 .is_object())
          fail("checkpoint '{}': config.json must be a JSON object", dir_arg_);
        if (!c.tokenizer_json.empty())
          parse_json_bounded(c.tokenizer_json,
                             fmt::format("checkpoint '{}': tokenizer.json", dir_arg_));
        save = prepare_dir(dir_arg_, dir_);
      });
    plan = error_.empty() ? nlohmann::json{{"save", save}}.dump()
                          : nlohmann::json{{"error", error_}}.dump();
  }
  comm_.broadcast(plan);
  const nlohmann::json plan_json = nlohmann::json::parse(plan);
  if (plan_json.contains("error")) fail("{}", plan_json["error"].get<std::string>());
  save_ = plan_json["save"].get<int64_t>();
}

void CheckpointSave::write(const ParamSet& params, const AdamW& optimizer) {
  // Phase 1: this rank's shards, durable before rank 0 hears of them. Errors travel with the
  // report, so every rank learns of them at the commit.
  if (!error_.empty()) return;
  error_ = attempt([&] {
    report_ =
        write_groups(dir_, save_, params, optimizer, groups_, contents_.weights_dtype, stats_);
  });
}

SaveStats CheckpointSave::commit(const ParamSet& params, int64_t optimizer_step) {
  nlohmann::json report = report_;
  if (!error_.empty()) report = {{"error", fmt::format("rank {}: {}", comm_.rank, error_)}};
  const std::vector<std::string> reports = comm_.gather(report.dump());
  // Phase 2: rank 0 commits the manifest; everyone learns the outcome.
  std::string outcome;
  if (comm_.rank == 0) {
    outcome = attempt([&] {
      try {
        commit_manifest(dir_arg_, dir_, contents_, save_, optimizer_step, reports, params, stats_);
      } catch (const fs::filesystem_error& e) {
        fail("checkpoint '{}': {}", dir_arg_, e.what());
      }
    });
    if (!outcome.empty()) remove_save(dir_, save_);  // never committed: nothing names its shards
  }
  comm_.broadcast(outcome);
  if (!outcome.empty()) fail("{}", outcome);
  return stats_;
}

SaveStats save_checkpoint(const std::string& dir, const ParamSet& params, const AdamW& optimizer,
                          const CheckpointContents& c, const std::vector<ShardGroup>& groups,
                          const SaveComm& comm) {
  CheckpointSave save(dir, c, groups, params, comm);
  save.write(params, optimizer);
  return save.commit(params, optimizer.step_count());
}

void save_checkpoint(const std::string& dir, const ParamSet& params, const AdamW& optimizer,
                     const CheckpointContents& contents) {
  ShardGroup all{"all", {}};
  for (const Param& p : params.all()) all.names.push_back(p.name);
  save_checkpoint(dir, params, optimizer, contents, {all});
}

}  // namespace sy::train
