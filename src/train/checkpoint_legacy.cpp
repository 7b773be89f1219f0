// The checkpoint layout before sharding (a whole directory replaced through "<dir>.tmp-<pid>" and
// "<dir>.old-<pid>"): what an interrupted save of it left is repaired, and it still loads.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/checkpoint_layout.h"
#include "util/error.h"
#include "util/json_bounded.h"

namespace sy::train {
namespace {

using namespace layout;

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

namespace layout {

// The earlier layout: model.safetensors + optimizer.safetensors, a manifest without "checkpoint".
nlohmann::json load_legacy(const std::string& dir_arg, const fs::path& dir, ParamSet& params,
                           AdamW& optimizer) {
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

}  // namespace layout
}  // namespace sy::train
