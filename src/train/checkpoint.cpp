#include "train/checkpoint.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/json_bounded.h"

namespace sy::train {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStateFile = "trainer_state.json";

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Makes a directory's entries (renames, new files) durable.
void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) fail("cannot open directory '{}' to sync it: {}", dir.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail("cannot sync directory '{}': {}", dir.string(), std::strerror(err));
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    fail("cannot rename '{}' to '{}': {}", from.string(), to.string(), std::strerror(errno));
}

// A sibling left by `pid`'s save is stale when that process is gone (or is this one: saves in
// one process run one after another).
bool stale(pid_t pid) {
  return pid == ::getpid() || (::kill(pid, 0) != 0 && errno == ESRCH);
}

// pid of "<base><tag><pid>", or -1 when `name` is not of that form.
pid_t sibling_pid(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return pid_t(std::stol(digits));
}

void write_weights(const fs::path& path, const ParamSet& params, DType dtype) {
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<uint16_t>> bf16;
  bf16.reserve(params.size());
  for (const Param& p : params.all()) {
    SY_ASSERT(int64_t(p.value.size()) == p.numel());
    if (dtype == DType::F32) {
      tensors.push_back({p.name, "F32", p.shape, p.value.data(), p.value.size() * 4});
    } else {
      auto& bits = bf16.emplace_back(p.value.size());
      for (size_t i = 0; i < bits.size(); ++i) bits[i] = f32_to_bf16(p.value[i]);
      tensors.push_back({p.name, "BF16", p.shape, bits.data(), bits.size() * 2});
    }
  }
  io::write_safetensors(path.string(), tensors);
}

// Absolute, normalised, without a trailing '/' (whose empty file name would put the temp dir
// inside).
fs::path checkpoint_path(const std::string& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

}  // namespace

void recover_checkpoint_dir(const std::string& dir_arg) {
  const fs::path dir = checkpoint_path(dir_arg);
  const fs::path parent = dir.parent_path();
  const std::string base = dir.filename().string();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return;
  std::vector<fs::path> tmps, olds;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (const pid_t pid = sibling_pid(name, base + ".tmp-"); pid > 0 && stale(pid))
      tmps.push_back(e.path());
    if (const pid_t pid = sibling_pid(name, base + ".old-"); pid > 0 && stale(pid))
      olds.push_back(e.path());
  }
  // A temp dir may be incomplete: never promote it, only remove it.
  for (const auto& t : tmps) fs::remove_all(t, ec);
  std::sort(olds.begin(), olds.end());
  for (const auto& old : olds) {
    if (!fs::exists(dir)) {
      // The crash came between "dir -> old" and "temp -> dir": the old checkpoint is complete.
      rename_or_fail(old, dir);
      fsync_dir(parent);
    } else {
      fs::remove_all(old, ec);
    }
  }
}

void save_checkpoint(const std::string& dir_arg, const ParamSet& params, const AdamW& optimizer,
                     const CheckpointContents& c) {
  // Validate everything before touching the disk.
  if (c.weights_dtype != DType::F32 && c.weights_dtype != DType::BF16)
    fail("checkpoint '{}': weights dtype {} is not supported (F32 or BF16)", dir_arg,
         dtype_name(c.weights_dtype));
  if (!parse_json_bounded(c.config_json, fmt::format("checkpoint '{}': config.json", dir_arg))
           .is_object())
    fail("checkpoint '{}': config.json must be a JSON object", dir_arg);
  if (!c.tokenizer_json.empty())
    parse_json_bounded(c.tokenizer_json, fmt::format("checkpoint '{}': tokenizer.json", dir_arg));
  if (!c.trainer_state.is_object())
    fail("checkpoint '{}': the trainer state must be a JSON object, not {}", dir_arg,
         c.trainer_state.type_name());
  const fs::path dir = checkpoint_path(dir_arg);
  const fs::path parent = dir.parent_path();
  if (!fs::is_directory(parent))
    fail("checkpoint '{}': the directory '{}' does not exist", dir_arg, parent.string());

  recover_checkpoint_dir(dir.string());
  if (fs::exists(dir)) {
    if (!fs::is_directory(dir)) fail("checkpoint '{}' exists and is not a directory", dir_arg);
    if (!fs::is_empty(dir) && !fs::exists(dir / kStateFile))
      fail(
          "refusing to replace '{}': it is not a training checkpoint (no {}); choose another "
          "directory",
          dir_arg, kStateFile);
  }

  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = dir.string() + ".tmp-" + pid;
  const fs::path old = dir.string() + ".old-" + pid;
  bool moved_old = false;
  auto undo = [&] {
    std::error_code ec;
    if (moved_old && !fs::exists(dir, ec)) std::rename(old.c_str(), dir.c_str());  // put it back
    fs::remove_all(tmp, ec);
  };
  try {
    if (!fs::create_directory(tmp))
      fail("checkpoint '{}': '{}' exists already", dir_arg, tmp.string());
    io::write_text_file_atomic((tmp / "config.json").string(), c.config_json);
    if (!c.tokenizer_json.empty())
      io::write_text_file_atomic((tmp / "tokenizer.json").string(), c.tokenizer_json);
    write_weights(tmp / "model.safetensors", params, c.weights_dtype);
    optimizer.save((tmp / "optimizer.safetensors").string(), params);
    nlohmann::json state = c.trainer_state;
    state["optimizer_step"] = optimizer.step_count();
    io::write_text_file_atomic((tmp / kStateFile).string(), state.dump(2) + "\n");
    fsync_dir(tmp);
    if (fs::exists(dir)) {
      rename_or_fail(dir, old);
      moved_old = true;
    }
    rename_or_fail(tmp, dir);
    fsync_dir(parent);
  } catch (const fs::filesystem_error& e) {  // one error type at this boundary
    undo();
    fail("checkpoint '{}': {}", dir_arg, e.what());
  } catch (...) {
    undo();
    throw;
  }
  // The new checkpoint is in place; a failure to remove the old one is repaired next time.
  std::error_code ec;
  if (moved_old) fs::remove_all(old, ec);
}

nlohmann::json load_checkpoint(const std::string& dir_arg, ParamSet& params, AdamW& optimizer) {
  recover_checkpoint_dir(dir_arg);
  const fs::path dir = checkpoint_path(dir_arg);
  if (!fs::is_directory(dir)) fail("checkpoint '{}' does not exist or is not a directory", dir_arg);

  // Check and read everything first, then modify: an error leaves the caller's state as it was.
  const io::TensorStore store = io::TensorStore::open(dir.string());
  for (const Param& p : params.all()) {
    const io::TensorInfo* t = store.find(p.name);
    if (!t)
      fail("checkpoint '{}' lacks parameter '{}' {} that the model has", dir_arg, p.name,
           shape_str(p.shape));
    if (t->shape != p.shape)
      fail("checkpoint '{}': parameter '{}' has shape {} but the model's has shape {}", dir_arg,
           p.name, t->shape_str(), shape_str(p.shape));
    if (!t->dtype)
      fail("checkpoint '{}': parameter '{}' has dtype {}; expected F32, F16 or BF16", dir_arg,
           p.name, t->dtype_name);
  }
  for (const auto& [name, t] : store.all())
    if (!params.find(name))
      fail("checkpoint '{}' has tensor '{}' {} that the model lacks", dir_arg, name,
           t->shape_str());

  AdamW loaded(optimizer.config());
  loaded.load((dir / "optimizer.safetensors").string(), params);
  const std::string state_path = (dir / kStateFile).string();
  nlohmann::json state =
      parse_json_bounded(io::read_text_file(state_path), fmt::format("'{}'", state_path));
  if (!state.is_object()) fail("'{}' must hold a JSON object", state_path);
  if (!state.contains("optimizer_step") || state["optimizer_step"] != loaded.step_count())
    fail("'{}': optimizer_step {} does not match optimizer.safetensors' step {}", state_path,
         state.contains("optimizer_step") ? excerpt(state["optimizer_step"]) : "(none)",
         loaded.step_count());

  for (Param& p : params.all()) {
    const io::TensorInfo& t = store.get(p.name);
    to_f32(*t.dtype, t.data, p.value.data(), p.value.size());
  }
  optimizer = std::move(loaded);
  return state;
}

}  // namespace sy::train
