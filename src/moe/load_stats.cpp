#include "moe/load_stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "util/error.h"

namespace sy::moe {

namespace {

double max_over_mean_of(const std::vector<int64_t>& loads) {
  if (loads.empty()) return 0.0;
  const int64_t sum = std::accumulate(loads.begin(), loads.end(), int64_t{0});
  const int64_t max = *std::max_element(loads.begin(), loads.end());
  return sum == 0 ? 0.0 : double(max) * double(loads.size()) / double(sum);
}

}  // namespace

LoadStats::LoadStats(int num_layers, int num_experts)
    : num_layers_(num_layers),
      num_experts_(num_experts),
      before_(size_t(num_layers) * size_t(num_experts), 0),
      after_(size_t(num_layers) * size_t(num_experts), 0),
      totals_(size_t(num_layers)),
      calls_(size_t(num_layers)) {}

void LoadStats::record(int layer, const CapacityOutcome& o) {
  for (int e = 0; e < num_experts_ && size_t(e) < o.load_before.size(); ++e) {
    before_[index(layer, e)] += o.load_before[size_t(e)];
    after_[index(layer, e)] += o.load_after[size_t(e)];
  }
  // This call's busiest expert and device, before and after the policy.
  CallStraggler& c = calls_[size_t(layer)];
  auto busiest = [&](const std::vector<int64_t>& loads, int64_t& max_e, int64_t& max_d,
                     int64_t& pairs) {
    std::vector<int64_t> per_device(
        static_cast<size_t>(placement_.empty() ? 1 : placement_.num_devices()), 0);
    for (int e = 0; e < num_experts_ && size_t(e) < loads.size(); ++e) {
      max_e = std::max(max_e, loads[size_t(e)]);
      pairs += loads[size_t(e)];
      per_device[placement_.empty() ? 0 : size_t(placement_.device_of(e))] += loads[size_t(e)];
    }
    max_d = *std::max_element(per_device.begin(), per_device.end());
  };
  int64_t me_b = 0, md_b = 0, me_a = 0, md_a = 0, p_b = 0, p_a = 0;
  busiest(o.load_before, me_b, md_b, p_b);
  busiest(o.load_after, me_a, md_a, p_a);
  if (p_b > 0) {
    ++c.calls;
    c.max_expert_before += me_b, c.max_device_before += md_b, c.pairs_before += p_b;
    c.max_expert_after += me_a, c.max_device_after += md_a, c.pairs_after += p_a;
  }
  CapacityOutcome& t = totals_[size_t(layer)];
  t.routed += o.routed;
  t.overflow += o.overflow;
  t.dropped += o.dropped;
  t.added += o.added;
  t.rerouted += o.rerouted;
}

int64_t LoadStats::device_count(int layer, int device) const {
  if (placement_.empty()) {
    int64_t sum = 0;
    for (int e = 0; e < num_experts_; ++e) sum += count(layer, e);
    return sum;
  }
  int64_t sum = 0;
  for (int32_t e : placement_.experts_on(device)) sum += count(layer, e);
  return sum;
}

bool LoadStats::layer_active(int layer) const {
  for (int e = 0; e < num_experts_; ++e)
    if (count_before(layer, e) > 0) return true;
  return false;
}

double LoadStats::max_over_mean(int layer) const {
  return max_over_mean_of({after_.begin() + long(index(layer, 0)),
                           after_.begin() + long(index(layer, 0)) + num_experts_});
}

double LoadStats::max_over_mean_before(int layer) const {
  return max_over_mean_of({before_.begin() + long(index(layer, 0)),
                           before_.begin() + long(index(layer, 0)) + num_experts_});
}

double LoadStats::device_max_over_mean(int layer) const {
  const int D = placement_.empty() ? 1 : placement_.num_devices();
  std::vector<int64_t> loads(static_cast<size_t>(D));
  for (int d = 0; d < D; ++d) loads[size_t(d)] = device_count(layer, d);
  return max_over_mean_of(loads);
}

double LoadStats::dropped_fraction(int layer) const {
  const CapacityOutcome& t = totals_[size_t(layer)];
  return t.routed == 0 ? 0.0 : double(t.overflow) / double(t.routed);
}

CapacityOutcome LoadStats::totals() const {
  CapacityOutcome sum;
  for (const CapacityOutcome& t : totals_) sum.accumulate(t);
  return sum;
}

bool LoadStats::any_policy_effect() const {
  const CapacityOutcome t = totals();
  return t.dropped > 0 || t.added > 0;
}

double LoadStats::CallStraggler::max_over_mean_before(int E) const {
  return pairs_before ? double(max_expert_before) * E / double(pairs_before) : 0.0;
}

double LoadStats::CallStraggler::max_over_mean_after(int E) const {
  return pairs_after ? double(max_expert_after) * E / double(pairs_after) : 0.0;
}

double LoadStats::CallStraggler::modelled_speedup(bool devices) const {
  const int64_t after = latency_after(devices);
  return after ? double(latency_before(devices)) / double(after) : 1.0;
}

LoadStats::CallStraggler LoadStats::call_straggler_total() const {
  CallStraggler s;
  for (const CallStraggler& c : calls_) {
    s.calls += c.calls;
    s.max_expert_before += c.max_expert_before, s.max_expert_after += c.max_expert_after;
    s.max_device_before += c.max_device_before, s.max_device_after += c.max_device_after;
    s.pairs_before += c.pairs_before, s.pairs_after += c.pairs_after;
  }
  return s;
}

nlohmann::json LoadStats::straggler_json() const {
  const CallStraggler s = call_straggler_total();
  const bool dev = has_devices();
  return {{"moe_calls", s.calls},
          {"per_call_max_over_mean_before", s.max_over_mean_before(num_experts_)},
          {"per_call_max_over_mean_after", s.max_over_mean_after(num_experts_)},
          {"sum_busiest_expert_pairs_before", s.max_expert_before},
          {"sum_busiest_expert_pairs_after", s.max_expert_after},
          {"sum_busiest_device_pairs_before", s.max_device_before},
          {"sum_busiest_device_pairs_after", s.max_device_after},
          {"modelled_latency_unit", dev ? "busiest device's pairs" : "busiest expert's pairs"},
          {"modelled_latency_dropless", s.latency_before(dev)},
          {"modelled_latency", s.latency_after(dev)},
          {"modelled_speedup", s.modelled_speedup(dev)}};
}

std::vector<int64_t> LoadStats::counters() const {
  std::vector<int64_t> v(before_);
  v.insert(v.end(), after_.begin(), after_.end());
  for (const CapacityOutcome& t : totals_)
    v.insert(v.end(), {t.routed, t.overflow, t.dropped, t.added, t.rerouted});
  return v;
}

void LoadStats::set_counters(const std::vector<int64_t>& v) {
  SY_ASSERT(v.size() == before_.size() + after_.size() + 5 * totals_.size());
  auto it = v.begin();
  std::copy(it, it + long(before_.size()), before_.begin());
  it += long(before_.size());
  std::copy(it, it + long(after_.size()), after_.begin());
  it += long(after_.size());
  for (CapacityOutcome& t : totals_) {
    t.routed = *it++, t.overflow = *it++, t.dropped = *it++, t.added = *it++, t.rerouted = *it++;
  }
}

std::string LoadStats::table(int max_columns) const {
  std::string out;
  const bool full = num_experts_ <= max_columns;
  const bool policy = any_policy_effect();
  const int D = placement_.empty() ? 1 : placement_.num_devices();
  const bool devices = D > 1;
  out += fmt::format("{:>5}", "layer");
  if (full) {
    for (int e = 0; e < num_experts_; ++e) out += fmt::format(" {:>6}", fmt::format("e{}", e));
  } else {
    out += fmt::format(" {:>8} {:>8} {:>8} {:>8} {:>6}", "pairs", "min", "mean", "max", "busiest");
  }
  out += fmt::format(" {:>8}", "max/mean");
  if (policy) out += fmt::format(" {:>8} {:>6} {:>7} {:>6}", "before", "DT", "dropped", "added");
  if (devices) out += fmt::format(" {:>8}", "dev m/m");
  out += "\n";
  double worst = 0, worst_before = 0;
  for (int l = 0; l < num_layers_; ++l) {
    if (!layer_active(l)) continue;
    out += fmt::format("{:>5}", l);
    int64_t sum = 0, mn = INT64_MAX, mx = 0;
    int busiest = 0;
    for (int e = 0; e < num_experts_; ++e) {
      const int64_t c = count(l, e);
      sum += c;
      mn = std::min(mn, c);
      if (c > mx) mx = c, busiest = e;
      if (full) out += fmt::format(" {:>6}", c);
    }
    if (!full)
      out += fmt::format(" {:>8} {:>8} {:>8.1f} {:>8} {:>6}", sum, mn, double(sum) / num_experts_,
                         mx, fmt::format("e{}", busiest));
    out += fmt::format(" {:>8.2f}", max_over_mean(l));
    const CapacityOutcome& t = totals_[size_t(l)];
    if (policy)
      out += fmt::format(" {:>8.2f} {:>5.1f}% {:>7} {:>6}", max_over_mean_before(l),
                         100.0 * dropped_fraction(l), t.dropped, t.added);
    if (devices) out += fmt::format(" {:>8.2f}", device_max_over_mean(l));
    out += "\n";
    worst = std::max(worst, max_over_mean(l));
    worst_before = std::max(worst_before, max_over_mean_before(l));
  }
  const CapacityOutcome t = totals();
  if (policy) {
    out += fmt::format(
        "{} pairs routed, {} dropped ({:.1f}%), {} added; DT = {:.1f}%; worst layer max/mean "
        "{:.2f} after the policy, {:.2f} before (1.00 = balanced)\n",
        t.routed, t.dropped, t.routed ? 100.0 * t.dropped / t.routed : 0.0, t.added,
        t.routed ? 100.0 * t.overflow / t.routed : 0.0, worst, worst_before);
  } else {
    out += fmt::format(
        "{} (token, expert) pairs routed; worst layer max/mean = {:.2f} (1.00 = "
        "balanced)\n",
        t.routed, worst);
  }
  if (devices)
    out += fmt::format("devices: {}; dev m/m = busiest device / mean device load\n",
                       placement_.describe());
  const CallStraggler s = call_straggler_total();
  if (s.calls > 0)
    out += fmt::format(
        "per call (the straggler EP waits for): busiest expert / mean {:.2f} before, {:.2f} after "
        "the policy; modelled EP latency (sum over {} calls of the busiest {}'s pairs) {} -> {}: "
        "{:.2f}x (a model, not a measurement)\n",
        s.max_over_mean_before(num_experts_), s.max_over_mean_after(num_experts_), s.calls,
        has_devices() ? "device" : "expert", s.latency_before(has_devices()),
        s.latency_after(has_devices()), s.modelled_speedup(has_devices()));
  return out;
}

nlohmann::json LoadStats::to_json() const {
  nlohmann::json layers = nlohmann::json::array();
  const int D = placement_.empty() ? 1 : placement_.num_devices();
  for (int l = 0; l < num_layers_; ++l) {
    if (!layer_active(l)) continue;
    const auto first = long(index(l, 0));
    std::vector<int64_t> after(after_.begin() + first, after_.begin() + first + num_experts_);
    std::vector<int64_t> before(before_.begin() + first, before_.begin() + first + num_experts_);
    std::vector<int64_t> per_device(static_cast<size_t>(D));
    for (int d = 0; d < D; ++d) per_device[size_t(d)] = device_count(l, d);
    const CapacityOutcome& t = totals_[size_t(l)];
    layers.push_back({{"layer", l},
                      {"tokens_per_expert", after},
                      {"tokens_per_expert_before_policy", before},
                      {"tokens_per_device", per_device},
                      {"max_over_mean", max_over_mean(l)},
                      {"max_over_mean_before_policy", max_over_mean_before(l)},
                      {"device_max_over_mean", device_max_over_mean(l)},
                      {"dropped_token_fraction", dropped_fraction(l)},
                      {"pairs_routed", t.routed},
                      {"pairs_dropped", t.dropped},
                      {"pairs_added", t.added},
                      {"pairs_rerouted", t.rerouted}});
  }
  std::vector<int32_t> device_of;
  for (int e = 0; e < placement_.num_experts(); ++e) device_of.push_back(placement_.device_of(e));
  const CapacityOutcome t = totals();
  return {{"num_experts", num_experts_},
          {"num_devices", D},
          {"device_of_expert", device_of},
          {"pairs_routed", t.routed},
          {"pairs_dropped", t.dropped},
          {"pairs_added", t.added},
          {"pairs_rerouted", t.rerouted},
          {"dropped_token_fraction", t.routed ? double(t.overflow) / double(t.routed) : 0.0},
          {"straggler", straggler_json()},
          {"layers", layers}};
}

}  // namespace sy::moe
