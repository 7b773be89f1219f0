// Loading a sharded checkpoint (train/checkpoint.h): every shard checked against the manifest's
// size and CRC-32 before anything is read from it.
#include <algorithm>
#include <fstream>
#include <map>
#include <memory>

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

// A manifest value that must be an object of strings / counts; sy::Error naming the key.
const nlohmann::json& member(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_object())
    fail("{}: '{}' is missing or not an object", where, key);
  return j[key];
}

uint32_t file_crc32(const fs::path& path, uint64_t& bytes) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open shard '{}'", path.string());
  // Sized by the file (most shards of small models are far below 1 MiB) and not zero-filled:
  // resuming checks every shard, and a fresh 1 MiB buffer per shard cost more than the CRC.
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  const size_t cap = size_t(std::min<uint64_t>(ec ? 1 << 20 : size + 1, 1 << 20));
  const auto buf = std::make_unique_for_overwrite<char[]>(cap);
  uint32_t crc = 0;
  bytes = 0;
  while (f) {
    f.read(buf.get(), std::streamsize(cap));
    const auto n = size_t(f.gcount());
    crc = crc32(buf.get(), n, crc);
    bytes += n;
  }
  return crc;
}

void verify_shard(const fs::path& dir, const std::string& file, const nlohmann::json& info,
                  const std::string& where) {
  const fs::path path = dir / file;
  if (!is_shard_file(file)) fail("{}: {} is not a shard name", where, excerpt_text(file, 80));
  if (!info.is_object() || !info.contains("bytes") || !info["bytes"].is_number_unsigned() ||
      !info.contains("crc32") || !info["crc32"].is_number_unsigned())
    fail("{}: the entry of shard '{}' lacks 'bytes' or 'crc32'", where, file);
  if (!fs::is_regular_file(path))
    fail("checkpoint shard '{}' is missing (the checkpoint is incomplete)", path.string());
  uint64_t bytes = 0;
  const uint32_t crc = file_crc32(path, bytes);
  if (bytes != info["bytes"].get<uint64_t>() || crc != info["crc32"].get<uint64_t>())
    fail(
        "checkpoint shard '{}' is corrupt: {} bytes with CRC-32 {:08x}, the manifest recorded "
        "{} bytes with CRC-32 {:08x}",
        path.string(), bytes, crc, info["bytes"].get<uint64_t>(), info["crc32"].get<uint64_t>());
}

// The shards the manifest names, each checked against its recorded size and CRC-32 and opened
// once.
class Shards {
 public:
  Shards(const fs::path& dir, const nlohmann::json& files, std::string where)
      : dir_(dir), files_(files), where_(std::move(where)) {}

  const io::TensorInfo& tensor(const nlohmann::json& file_json, const std::string& name,
                               const std::string& what) {
    if (!file_json.is_string()) fail("{}: the shard of {} is not a file name", where_, what);
    const std::string file = file_json.get<std::string>();
    if (!is_shard_file(file) || !files_.contains(file))
      fail("{}: {} is in {}, which the manifest does not list", where_, what,
           excerpt_text(file, 80));
    auto it = open_.find(file);
    if (it == open_.end()) it = open_.emplace(file, open(file)).first;
    for (const io::TensorInfo& t : it->second->tensors())
      if (t.name == name) return t;
    fail("shard '{}' lacks '{}' ({})", (dir_ / file).string(), name, what);
  }

 private:
  std::unique_ptr<io::SafetensorsFile> open(const std::string& file) {
    verify_shard(dir_, file, files_[file], where_);
    return std::make_unique<io::SafetensorsFile>((dir_ / file).string());
  }

  fs::path dir_;
  const nlohmann::json& files_;
  std::string where_;
  std::map<std::string, std::unique_ptr<io::SafetensorsFile>> open_;
};

nlohmann::json load_sharded(const fs::path& dir, nlohmann::json state, ParamSet& params,
                            AdamW& optimizer) {
  const std::string where = fmt::format("'{}'", (dir / kStateFile).string());
  const nlohmann::json& section = state["checkpoint"];
  if (!section.is_object() || !section.contains("format") || section["format"] != kFormat)
    fail("{}: 'checkpoint.format' is not \"{}\"", where, kFormat);
  if (!state.contains("optimizer_step") || !state["optimizer_step"].is_number_unsigned() ||
      state["optimizer_step"].get<uint64_t>() > (uint64_t(1) << 53))
    fail("{}: 'optimizer_step' is missing or not a step count", where);
  const nlohmann::json& files = member(section, "files", where);
  const nlohmann::json& weights = member(section, "weights", where);
  const nlohmann::json& moments = member(section, "moments", where);
  Shards shards(dir, files, where);

  // Check and read everything first, then modify: an error leaves the caller's state as it was.
  std::vector<const io::TensorInfo*> values;
  std::map<std::string, AdamW::Moments> state_by_name;
  for (const Param& p : params.all()) {
    if (!weights.contains(p.name))
      fail("checkpoint '{}' lacks parameter '{}' {} that the model has", dir.string(), p.name,
           shape_str(p.shape));
    const io::TensorInfo& t = shards.tensor(weights[p.name], p.name, "parameter '" + p.name + "'");
    if (t.shape != p.shape)
      fail("checkpoint '{}': parameter '{}' has shape {} but the model's has shape {}",
           dir.string(), p.name, t.shape_str(), shape_str(p.shape));
    if (!t.dtype)
      fail("checkpoint '{}': parameter '{}' has dtype {}; expected F32, F16 or BF16", dir.string(),
           p.name, t.dtype_name);
    values.push_back(&t);
    if (!p.trainable) continue;
    if (!moments.contains(p.name))
      fail("checkpoint '{}' lacks the optimizer state of '{}'", dir.string(), p.name);
    AdamW::Moments& m = state_by_name[p.name];
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      const io::TensorInfo& s = shards.tensor(moments[p.name], p.name + suffix,
                                              "the optimizer state of '" + p.name + "'");
      if (s.dtype_name != "F32" || s.shape != p.shape)
        fail("checkpoint '{}': '{}{}' is {} {}, expected F32 {}", dir.string(), p.name, suffix,
             s.dtype_name, s.shape_str(), shape_str(p.shape));
      std::vector<float>& dst = suffix == std::string(".exp_avg") ? m.exp_avg : m.exp_avg_sq;
      dst.resize(size_t(s.numel()));
      if (s.nbytes) std::memcpy(dst.data(), s.data, s.nbytes);
    }
  }
  for (const auto& [name, file] : weights.items())
    if (!params.find(name))
      fail("checkpoint '{}' has tensor {} that the model lacks", dir.string(),
           excerpt_text(name, 160));

  size_t i = 0;
  for (Param& p : params.all()) {
    const io::TensorInfo& t = *values[i++];
    to_f32(*t.dtype, t.data, p.value.data(), p.value.size());
  }
  optimizer.restore(state["optimizer_step"].get<int64_t>(), std::move(state_by_name));
  return state;
}

}  // namespace

void verify_checkpoint(const std::string& dir_arg) {
  const fs::path dir = checkpoint_path(dir_arg);
  const std::string state_path = (dir / kStateFile).string();
  const nlohmann::json state =
      parse_json_bounded(io::read_text_file(state_path), fmt::format("'{}'", state_path));
  if (!state.is_object() || !state.contains("checkpoint")) return;
  const std::string where = fmt::format("'{}'", state_path);
  if (!state["checkpoint"].is_object()) fail("{}: 'checkpoint' is not an object", where);
  for (const auto& [file, info] : member(state["checkpoint"], "files", where).items())
    verify_shard(dir, file, info, where);
}

nlohmann::json load_checkpoint(const std::string& dir_arg, ParamSet& params, AdamW& optimizer) {
  recover_checkpoint_dir(dir_arg);
  const fs::path dir = checkpoint_path(dir_arg);
  if (!fs::is_directory(dir)) fail("checkpoint '{}' does not exist or is not a directory", dir_arg);
  const std::string state_path = (dir / kStateFile).string();
  nlohmann::json state =
      parse_json_bounded(io::read_text_file(state_path), fmt::format("'{}'", state_path));
  if (!state.is_object()) fail("'{}' must hold a JSON object", state_path);
  if (state.contains("checkpoint")) return load_sharded(dir, std::move(state), params, optimizer);
  return load_legacy(dir_arg, dir, params, optimizer);
}

}  // namespace sy::train
