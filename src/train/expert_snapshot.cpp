#include "train/expert_snapshot.h"

#include <fmt/core.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "io/safetensors.h"
#include "util/error.h"

namespace sy::train {
namespace {

namespace fs = std::filesystem;

// FNV-1a of the run directory's absolute path: the same run finds the same snapshot.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

ExpertSnapshot::ExpertSnapshot(const std::string& root, const std::string& run_dir, int rank) {
  if (!fs::is_directory(root))
    fail("--snapshot-dir '{}' is not a directory (node-local memory, e.g. /dev/shm)", root);
  const std::string run = fs::absolute(run_dir).lexically_normal().string();
  dir_ = fmt::format("{}/switchyard-{:016x}/rank-{}", root, fnv1a(run), rank);
}

std::string ExpertSnapshot::path(const std::string& stem) const {
  return dir_ + "/" + stem + ".safetensors";
}

void ExpertSnapshot::write(const std::string& stem, const std::vector<std::string>& names,
                           const ParamSet& params, const AdamW& optimizer, int64_t step) const {
  fs::create_directories(dir_);
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<float>> zeros;
  zeros.reserve(names.size());
  for (const std::string& n : names) {
    const Param& p = params.get(n);
    tensors.push_back({n, "F32", p.shape, p.value.data(), p.value.size() * 4});
    const auto it = optimizer.state().find(n);
    const bool has = it != optimizer.state().end() && !it->second.exp_avg.empty();
    const std::vector<float>& m = has ? it->second.exp_avg : zeros.emplace_back(p.value.size());
    const std::vector<float>& v = has ? it->second.exp_avg_sq : m;
    tensors.push_back({n + ".exp_avg", "F32", p.shape, m.data(), m.size() * 4});
    tensors.push_back({n + ".exp_avg_sq", "F32", p.shape, v.data(), v.size() * 4});
  }
  io::write_safetensors(path(stem), tensors, {{"format", "pt"}, {"step", std::to_string(step)}});
}

int64_t ExpertSnapshot::step_of(const std::string& stem) const {
  if (!fs::is_regular_file(path(stem))) return -1;
  try {
    const io::SafetensorsFile f(path(stem));
    const auto it = f.metadata().find("step");
    if (it == f.metadata().end()) return -1;
    size_t used = 0;
    const long long step = std::stoll(it->second, &used);
    return used == it->second.size() && step >= 0 ? int64_t(step) : -1;
  } catch (const std::exception&) {
    return -1;  // a damaged snapshot is no snapshot: storage has the expert
  }
}

void ExpertSnapshot::load(const std::string& stem, const std::vector<std::string>& names,
                          ParamSet& params, AdamW& optimizer) const {
  const io::SafetensorsFile f(path(stem));
  std::map<std::string, const io::TensorInfo*> by_name;
  for (const auto& t : f.tensors()) by_name[t.name] = &t;
  auto get = [&](const std::string& name, const Param& p) -> const io::TensorInfo& {
    const auto it = by_name.find(name);
    if (it == by_name.end() || it->second->dtype_name != "F32" || it->second->shape != p.shape ||
        it->second->nbytes != p.value.size() * 4)
      fail("snapshot '{}' lacks '{}' as F32 with the parameter's shape", path(stem), name);
    return *it->second;
  };
  for (const std::string& n : names) {  // check everything first
    const Param& p = params.get(n);
    get(n, p);
    get(n + ".exp_avg", p);
    get(n + ".exp_avg_sq", p);
  }
  for (const std::string& n : names) {
    Param& p = params.get(n);
    std::memcpy(p.value.data(), get(n, p).data, p.value.size() * 4);
    AdamW::Moments m;
    m.exp_avg.resize(p.value.size());
    m.exp_avg_sq.resize(p.value.size());
    std::memcpy(m.exp_avg.data(), get(n + ".exp_avg", p).data, m.exp_avg.size() * 4);
    std::memcpy(m.exp_avg_sq.data(), get(n + ".exp_avg_sq", p).data, m.exp_avg_sq.size() * 4);
    optimizer.set_moments(n, std::move(m));
  }
}

void ExpertSnapshot::remove_all() const {
  std::error_code ec;
  fs::remove_all(dir_, ec);
  fs::remove(fs::path(dir_).parent_path(), ec);  // only when no other rank's is left
}

}  // namespace sy::train
