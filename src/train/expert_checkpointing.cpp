#include "train/expert_checkpointing.h"

#include <fmt/core.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <optional>

#include "util/error.h"
#include "util/json_bounded.h"

namespace sy::train {
namespace {

// The number after `key` in a tensor name ("model.layers.3.mlp" with "layers." -> 3).
std::optional<int> index_after(const std::string& name, const std::string& key) {
  const size_t at = name.find(key);
  if (at == std::string::npos) return std::nullopt;
  size_t i = at + key.size();
  int v = 0;
  bool any = false;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && v < (1 << 24); ++i, any = true)
    v = v * 10 + (name[i] - '0');
  return any ? std::optional<int>(v) : std::nullopt;
}

// Bytes a parameter costs a checkpoint: float32 weights and two float32 moments.
double state_bytes(const Param& p) {
  return double(p.numel()) * 12.0;
}

// A per-layer, per-expert table from the manifest, checked against the model's shape.
std::vector<std::vector<int64_t>> read_table(const nlohmann::json& state, const char* key,
                                             size_t layers, size_t experts) {
  if (!state.contains(key) || !state[key].is_array() || state[key].size() != layers)
    fail("trainer_state.json: 'pec.{}' does not match the model's {} MoE layers", key, layers);
  std::vector<std::vector<int64_t>> out;
  for (const auto& row : state[key]) {
    if (!row.is_array() || row.size() != experts)
      fail("trainer_state.json: a row of 'pec.{}' does not have the model's {} experts", key,
           experts);
    auto& r = out.emplace_back();
    for (const auto& v : row) {
      // Token-slots and steps: at most 2^44 each, so sums over 65536 experts stay in range.
      if (!v.is_number_integer() || v.get<int64_t>() < -1 || v.get<int64_t>() > (int64_t(1) << 44))
        fail("trainer_state.json: 'pec.{}' holds {}, not a count", key, excerpt(v));
      r.push_back(v.get<int64_t>());
    }
  }
  return out;
}

}  // namespace

ExpertCheckpointing::ExpertCheckpointing(PecConfig config, const model::ModelConfig& model,
                                         const ParamSet& params, int rank, int ranks,
                                         std::function<int(int)> owner, double slots_per_layer)
    : config_(config),
      rank_(rank),
      ranks_(ranks),
      num_experts_(int(model.router.num_experts)),
      slots_per_layer_(slots_per_layer),
      owner_(std::move(owner)) {
  if (config_.k < 0) fail("--pec-k must be at least 0 (0: every expert), got {}", config_.k);
  if (config_.k > num_experts_ && num_experts_ > 0)
    fail("--pec-k {} exceeds the model's {} experts per layer", config_.k, num_experts_);
  if (!(config_.plt_threshold > 0 && config_.plt_threshold <= 1))
    fail("--plt-threshold must be in (0, 1], got {}", config_.plt_threshold);
  k_ = config_.k == 0 ? num_experts_ : config_.k;
  std::map<int, int> ordinal;  // layer -> MoE ordinal
  for (int l = 0; l < int(model.num_layers); ++l)
    if (model.layer_is_moe[size_t(l)]) {
      ordinal[l] = int(moe_layers_.size());
      moe_layers_.push_back(l);
    }
  const size_t L = moe_layers_.size(), E = size_t(num_experts_);
  expert_names_.assign(L, std::vector<std::vector<std::string>>(E));
  unsaved_.assign(L, std::vector<int64_t>(E, 0));
  saved_at_.assign(L, std::vector<int64_t>(E, -1));
  unsaved_snap_ = unsaved_;
  snapshot_at_ = saved_at_;
  if (config_.snapshot_k < 0 || config_.snapshot_k > num_experts_)
    fail("--snapshot-k must be 0 to the model's {} experts, got {}", num_experts_,
         config_.snapshot_k);

  // Experts by (layer, expert); the rest in units of one layer (or -1: embeddings, norm, head).
  std::vector<double> expert_bytes(E, 0.0);
  std::map<int, std::pair<double, std::vector<std::string>>> units;
  for (const Param& p : params.all()) {
    const auto layer = index_after(p.name, "layers.");
    if (p.expert) {
      const auto e = index_after(p.name, ".experts.");
      if (!layer || !e || !ordinal.count(*layer) || *e >= num_experts_)
        fail("cannot tell which expert '{}' belongs to", p.name);
      expert_names_[size_t(ordinal[*layer])][size_t(*e)].push_back(p.name);
      if (ordinal[*layer] == 0) expert_bytes[size_t(*e)] += state_bytes(p);
      continue;
    }
    auto& u = units[layer.value_or(-1)];
    u.first += state_bytes(p);
    u.second.push_back(p.name);
  }
  // Adaptive sharding of the non-expert state: largest unit to the least-loaded rank, starting
  // from each rank's expected expert bytes per checkpoint.
  std::vector<double> load(size_t(ranks_), 0.0);
  for (int e = 0; e < num_experts_; ++e)
    load[size_t(owner_(e))] += expert_bytes[size_t(e)] * double(L) * k_ / num_experts_;
  std::vector<std::pair<double, int>> order;
  for (const auto& [layer, u] : units) order.push_back({-u.first, layer});
  std::sort(order.begin(), order.end());
  for (const auto& [neg_bytes, layer] : order) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    load[size_t(r)] -= neg_bytes;
    if (r == rank_)
      for (const std::string& n : units[layer].second) dense_names_.push_back(n);
  }
}

void ExpertCheckpointing::count(int layer, const std::vector<int64_t>& counts) {
  const auto it = std::find(moe_layers_.begin(), moe_layers_.end(), layer);
  if (it == moe_layers_.end() || counts.size() != size_t(num_experts_)) return;
  const size_t j = size_t(it - moe_layers_.begin());
  for (size_t e = 0; e < counts.size(); ++e) {
    unsaved_[j][e] += counts[e];
    unsaved_snap_[j][e] += counts[e];
  }
}

std::string ExpertCheckpointing::stem(size_t j, int e) const {
  return fmt::format("L{}-E{}", moe_layers_[j], e);
}

std::vector<std::vector<int>> ExpertCheckpointing::select_snapshot(
    const std::vector<std::vector<int>>& persisted) const {
  std::vector<std::vector<int>> out(moe_layers_.size());
  if (config_.snapshot_k == 0) return out;
  const int N = num_experts_;
  for (size_t j = 0; j < out.size(); ++j) {
    std::vector<bool> take(size_t(N), false);
    for (int e : persisted[j]) take[size_t(e)] = true;
    const int64_t start = (saves_ + int64_t(j)) * k_;  // where the persisted rotation starts
    for (int i = 0; i < config_.snapshot_k; ++i) take[size_t((start + i) % N)] = true;
    for (int e = 0; e < N; ++e)
      if (take[size_t(e)]) out[j].push_back(e);
  }
  return out;
}

std::vector<std::vector<int>> ExpertCheckpointing::select(bool full) const {
  const int N = num_experts_;
  std::vector<std::vector<int>> out(moe_layers_.size());
  for (size_t j = 0; j < moe_layers_.size(); ++j) {
    std::vector<bool> take(size_t(N), full || k_ >= N);
    if (config_.load_aware) {
      std::vector<int> order(static_cast<size_t>(N));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        return unsaved_[j][size_t(a)] > unsaved_[j][size_t(b)];
      });
      for (int i = 0; i < k_; ++i) take[size_t(order[size_t(i)])] = true;
    } else {
      const int64_t start = (saves_ + int64_t(j)) * k_;
      for (int i = 0; i < k_; ++i) take[size_t((start + i) % N)] = true;
    }
    for (int e = 0; e < N; ++e)
      if (take[size_t(e)] || saved_at_[j][size_t(e)] < 0) out[j].push_back(e);
  }
  return out;
}

std::vector<ShardGroup> ExpertCheckpointing::groups(
    const std::vector<std::vector<int>>& selection) const {
  std::vector<ShardGroup> out;
  if (!dense_names_.empty()) out.push_back({fmt::format("dense-r{}", rank_), dense_names_});
  for (size_t j = 0; j < selection.size(); ++j)
    for (int e : selection[j])
      if (owner_(e) == rank_) out.push_back({stem(j, e), expert_names_[j][size_t(e)]});
  return out;
}

nlohmann::json ExpertCheckpointing::state_after(const std::vector<std::vector<int>>& selection,
                                                const std::vector<std::vector<int>>& snapshot,
                                                int64_t step) const {
  ExpertCheckpointing next = *this;
  next.committed(selection, snapshot, step);
  return {{"k", k_},
          {"k_initial", config_.k == 0 ? num_experts_ : config_.k},
          {"selection", config_.load_aware ? "load-aware" : "sequential"},
          {"k_snapshot", config_.snapshot_k},
          {"saves", next.saves_},
          {"moe_layers", moe_layers_},
          {"unsaved_slots", next.unsaved_},
          {"saved_step", next.saved_at_},
          {"unsaved_since_snapshot", next.unsaved_snap_},
          {"snapshot_step", next.snapshot_at_},
          {"plt", plt_},
          {"lost_slots", lost_total_},
          {"recoveries", recoveries_}};
}

void ExpertCheckpointing::committed(const std::vector<std::vector<int>>& selection,
                                    const std::vector<std::vector<int>>& snapshot, int64_t step) {
  // A persisted expert's newest state is also its freshest: nothing unsaved in either level.
  for (size_t j = 0; j < selection.size(); ++j)
    for (int e : selection[j]) {
      unsaved_[j][size_t(e)] = unsaved_snap_[j][size_t(e)] = 0;
      saved_at_[j][size_t(e)] = step;
    }
  for (size_t j = 0; j < snapshot.size(); ++j)
    for (int e : snapshot[j]) {
      unsaved_snap_[j][size_t(e)] = 0;
      snapshot_at_[j][size_t(e)] = step;
    }
  ++saves_;
}

void ExpertCheckpointing::restore_state(const nlohmann::json& state) {
  has_state_ = !state.is_null();
  if (!has_state_) return;  // a checkpoint from before PEC: every expert saved each time
  if (!state.is_object()) fail("trainer_state.json: 'pec' must be an object");
  const size_t L = moe_layers_.size(), E = size_t(num_experts_);
  unsaved_ = read_table(state, "unsaved_slots", L, E);
  saved_at_ = read_table(state, "saved_step", L, E);
  if (state.contains("unsaved_since_snapshot")) {
    unsaved_snap_ = read_table(state, "unsaved_since_snapshot", L, E);
    snapshot_at_ = read_table(state, "snapshot_step", L, E);
  }
  auto number = [&](const char* key) {
    if (!state.contains(key) || !state[key].is_number() || !(state[key].get<double>() >= 0) ||
        state[key].get<double>() > 1e15)
      fail("trainer_state.json: 'pec.{}' is missing or not a non-negative number", key);
    return state[key].get<double>();
  };
  saves_ = int64_t(number("saves"));
  if (saves_ > 1000000) fail("trainer_state.json: 'pec.saves' {} is implausible", saves_);
  plt_ = number("plt");
  lost_total_ = int64_t(number("lost_slots"));
  recoveries_ = int64_t(number("recoveries"));
  const double k = number("k");
  if (k >= 1 && k <= num_experts_) k_ = std::max(k_, int(k));  // a doubled K carries over
}

Recovery ExpertCheckpointing::recover(const std::vector<std::vector<bool>>& from_snapshot) {
  Recovery r;
  r.k_before = r.k_after = k_;
  const size_t L = moe_layers_.size();
  r.lost_slots.assign(L, 0);
  if (!has_state_) return r;
  for (size_t j = 0; j < L; ++j) {
    for (size_t e = 0; e < unsaved_[j].size(); ++e) {
      const bool snap =
          j < from_snapshot.size() && e < from_snapshot[j].size() && from_snapshot[j][e];
      r.lost_slots[j] += snap ? unsaved_snap_[j][e] : unsaved_[j][e];
      unsaved_[j][e] = unsaved_snap_[j][e] = 0;  // those experts are back at a saved state
    }
    lost_total_ += r.lost_slots[j];
    if (slots_per_layer_ > 0) r.plt_added += double(r.lost_slots[j]) / slots_per_layer_ / double(L);
  }
  plt_ += r.plt_added;
  r.plt_total = plt_;
  if (r.plt_added > 0) ++recoveries_;
  if (config_.dynamic_k && plt_ > config_.plt_threshold && k_ < num_experts_)
    k_ = std::min(2 * k_, num_experts_);
  r.k_after = k_;
  return r;
}

}  // namespace sy::train
