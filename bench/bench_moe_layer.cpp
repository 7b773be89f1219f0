// One MoE layer (shape A of machine.md by default) on a prefill-sized batch under controlled
// routing skew, for every capacity policy and capacity factor gamma (papers.md section 1):
// layer time, the modelled expert-parallel latency (the busiest device's kept pairs, as a
// ratio to the dropless busiest load), max/mean before and after, DT, pairs dropped / added.
// Second part: the grouped expert FFN's GFLOP/s against OpenBLAS sgemm on the same shapes.
//   bench_moe_layer                                   (defaults: shape A, F32, 512 tokens, 4
//   devices) bench_moe_layer --skews zipf1.0,hot --policies none,score,expanded --gammas 1,1.5
//   --json out.json bench_moe_layer --sections ffn --ffn-tokens 128,512,2048
//
// Routing is set, not learned: the router weight is the identity on the first E hidden
// columns, and those columns of each token hold logits log(p_e) + noise, so moe_forward's own
// router (sgemm + softmax + top-k) sees exactly the chosen logits. With Gumbel noise (default)
// each token's first choice is drawn from p exactly (the Gumbel-max trick); its later choices
// are draws without replacement. Loads are read back from LoadStats (runtime.stats).
#include <fmt/core.h>
#include <omp.h>
#include <CLI/CLI.hpp>

#include <hwy/targets.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "common/timing.h"
#include "io/file_util.h"
#include "moe/capacity.h"
#include "moe/dispatch.h"
#include "moe/expert_ffn.h"
#include "moe/load_stats.h"
#include "moe/moe_layer.h"
#include "moe/placement.h"
#include "moe/router.h"
#include "ops/blas_env.h"
#include "ops/elementwise.h"
#include "ops/kernels.h"
#include "ops/matmul.h"
#include "ops/threads.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/splitmix64.h"

namespace {

using namespace sy;
using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------
// Deterministic random numbers (splitmix64): the same flags give the same tokens and weights.

struct Rng {
  SplitMix64 stream;
  explicit Rng(uint64_t seed) : stream(seed * kSplitMixGolden + 0x632BE59BD9B4E019ull) {}
  uint64_t next() { return stream.next(); }
  double uniform() { return stream.uniform_open(); }  // (0, 1)
  double gumbel() { return -std::log(-std::log(uniform())); }
  double gaussian() {
    return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform());
  }
};

// ---------------------------------------------------------------------------------------
// Skews: the target popularity p_e of each expert (the distribution of a token's first choice).

struct Skew {
  std::string name;
  std::vector<double> popularity;  // [E], sums to 1
};

// "uniform", "zipf<s>" (p of the r-th most popular expert ~ 1/r^s), "hot" or "hot<share>" (one
// expert gets `share` of first choices, the rest split evenly). Rank r goes to expert
// rank_to_expert[r].
Skew make_skew(const std::string& name, int E, double hot_share,
               const std::vector<int>& rank_to_expert) {
  std::vector<double> by_rank(size_t(E), 1.0 / E);
  auto number_after = [&](size_t prefix) {
    try {
      size_t used = 0;
      const double v = std::stod(name.substr(prefix), &used);
      if (used != name.size() - prefix) throw std::invalid_argument("trailing");
      return v;
    } catch (const std::exception&) {
      throw Error(
          fmt::format("skew '{}': expected uniform, zipf<exponent> (e.g. zipf1.0) or "
                      "hot / hot<share> (e.g. hot0.5)",
                      name));
    }
  };
  if (name == "uniform") {
  } else if (name.rfind("zipf", 0) == 0) {
    const double s = number_after(4);
    if (!(s >= 0 && s <= 10))
      throw Error(fmt::format("skew '{}': Zipf exponent must be in [0, 10]", name));
    double sum = 0;
    for (int r = 0; r < E; ++r) sum += by_rank[size_t(r)] = std::pow(double(r + 1), -s);
    for (double& p : by_rank) p /= sum;
  } else if (name.rfind("hot", 0) == 0) {
    const double share = name == "hot" ? hot_share : number_after(3);
    if (!(share > 0 && share < 1))
      throw Error(fmt::format("skew '{}': hot share must be in (0, 1)", name));
    by_rank[0] = share;
    for (int r = 1; r < E; ++r) by_rank[size_t(r)] = (1 - share) / (E - 1);
  } else {
    number_after(name.size());  // throws the message listing the valid names
  }
  Skew s{name, std::vector<double>(size_t(E))};
  for (int r = 0; r < E; ++r) s.popularity[size_t(rank_to_expert[size_t(r)])] = by_rank[size_t(r)];
  return s;
}

// Popularity rank -> expert. sequential: rank r is expert r (with contiguous placement the
// hottest experts share device 0: the worst case for device balance); spread: consecutive
// ranks on different devices (the best case); shuffled: a seeded permutation.
std::vector<int> rank_order(const std::string& order, int E, const moe::Placement& placement,
                            uint64_t seed) {
  std::vector<int> out(static_cast<size_t>(E));
  std::iota(out.begin(), out.end(), 0);
  if (order == "spread") {
    out.clear();
    for (int slot = 0; int(out.size()) < E; ++slot)
      for (int d = 0; d < placement.num_devices(); ++d)
        if (slot < int(placement.experts_on(d).size()))
          out.push_back(placement.experts_on(d)[size_t(slot)]);
  } else if (order == "shuffled") {
    Rng rng(seed ^ 0x5eed);
    for (int i = E - 1; i > 0; --i) std::swap(out[size_t(i)], out[rng.next() % uint64_t(i + 1)]);
  }
  return out;
}

// FNV-1a: a skew's tokens depend on its name (and --seed), not on its place in --skews.
uint64_t name_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// x: [T, H] activations whose first E columns are the router logits log(p_e) + noise; the
// other columns are uniform in [-1, 1] (what the experts see besides the logits).
std::vector<float> make_tokens(const Skew& skew, int64_t T, int64_t H, const std::string& noise,
                               double noise_scale, uint64_t seed) {
  const int E = int(skew.popularity.size());
  std::vector<float> x(size_t(T * H));
  Rng rng(seed);
  for (int64_t t = 0; t < T; ++t) {
    float* row = x.data() + t * H;
    for (int e = 0; e < E; ++e) {
      const double n = noise == "gumbel" ? rng.gumbel() : rng.gaussian();
      row[e] = float(std::log(skew.popularity[size_t(e)]) + noise_scale * n);
    }
    for (int64_t i = E; i < H; ++i) row[i] = float(2 * rng.uniform() - 1);
  }
  return x;
}

// Share of tokens whose largest logit is expert e (the realised first-choice distribution).
std::vector<double> first_choice_share(const std::vector<float>& x, int64_t T, int64_t H, int E) {
  std::vector<double> share(size_t(E), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const float* row = x.data() + t * H;
    share[size_t(std::max_element(row, row + E) - row)] += 1.0 / double(T);
  }
  return share;
}

// ---------------------------------------------------------------------------------------
// Expert weights: random, generated in memory. F32 master copy always (the sgemm reference
// needs it); the layer's dtype is a converted copy when it is not F32.

struct Experts {
  int64_t H = 0, I = 0;
  int E = 0;
  DType dtype = DType::F32;
  std::vector<float> f32;      // [E][gate I*H, up I*H, down H*I]
  std::vector<uint16_t> half;  // same layout, BF16 or F16
  std::vector<moe::FfnWeights> views, views_f32;

  Experts(int E_, int64_t H_, int64_t I_, DType dt, uint64_t seed)
      : H(H_), I(I_), E(E_), dtype(dt) {
    const size_t per = size_t(3 * H * I), total = per * size_t(E);
    f32.resize(total);
    // Uniform(-a, a), a = sqrt(3 / fan_in): unit-variance outputs for unit-variance inputs.
    const float a_in = float(std::sqrt(3.0 / double(H))),
                a_down = float(std::sqrt(3.0 / double(I)));
#pragma omp parallel for schedule(static)
    for (int64_t block = 0; block < int64_t(total >> 16) + 1; ++block) {
      Rng rng(seed * 1000003 + uint64_t(block));
      const size_t begin = size_t(block) << 16, end = std::min(total, begin + (size_t(1) << 16));
      for (size_t i = begin; i < end; ++i) {
        const float a = (i % per) < size_t(2 * H * I) ? a_in : a_down;
        f32[i] = float(a * (2 * rng.uniform() - 1));
      }
    }
    if (dt != DType::F32) {
      half.resize(total);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < int64_t(total); ++i)
        half[size_t(i)] =
            dt == DType::BF16 ? f32_to_bf16(f32[size_t(i)]) : f32_to_f16(f32[size_t(i)]);
    }
    for (int e = 0; e < E; ++e) {
      const size_t off = per * size_t(e);
      auto make = [&](DType d, const void* base, size_t elem) {
        const auto* p = static_cast<const uint8_t*>(base) + off * elem;
        const size_t mat = size_t(H * I) * elem;
        return moe::FfnWeights{ops::WeightView{d, I, H, p}, ops::WeightView{d, I, H, p + mat},
                               ops::WeightView{d, H, I, p + 2 * mat}};
      };
      views_f32.push_back(make(DType::F32, f32.data(), 4));
      views.push_back(dt == DType::F32 ? views_f32.back() : make(dt, half.data(), 2));
    }
  }
};

// ---------------------------------------------------------------------------------------
// Part 1: skew x policy x gamma.

struct LayerSetup {
  int64_t T = 0, H = 0;
  int E = 0, K = 0;
  moe::RouterConfig router;
  std::vector<float> router_weight;  // [E, H]: identity on the first E columns
  moe::Placement placement;
  const Experts* experts = nullptr;
  int reps = 5, policy_reps = 50;
  int reroute_rounds = 3;
  uint64_t seed = 1;
};

std::string ratio_str(double before, double after) {
  return fmt::format("{:.2f}->{:.2f}", before, after);
}

Json run_skew(const LayerSetup& L, const Skew& skew, const std::vector<double>& target_share,
              const std::vector<float>& x, const std::vector<moe::CapacityPolicy>& policies,
              const std::vector<double>& gammas) {
  const int E = L.E, K = L.K, D = L.placement.num_devices();
  const int64_t T = L.T, H = L.H;
  moe::MoeBlock block;
  block.router = &L.router;
  block.router_weight = L.router_weight.data();
  block.experts = L.experts->views;
  moe::MoeScratch scratch;
  std::vector<float> out(size_t(T * H));

  // The router's own choice, for timing the policy stage alone (apply_capacity per device slice).
  std::vector<float> logits(size_t(T * E)), scores(size_t(T * E)), rweights(size_t(T * K));
  std::vector<int32_t> rids(size_t(T * K));
  ops::sgemm_nt(T, E, H, x.data(), H, L.router_weight.data(), H, logits.data(), E);
  moe::route(L.router, logits.data(), T, nullptr, rids.data(), rweights.data(), scores.data());

  const auto share = first_choice_share(x, T, H, E);
  std::string pop, real;
  for (int e = 0; e < E; ++e) {
    pop += fmt::format(" {:.3f}", skew.popularity[size_t(e)]);
    real += fmt::format(" {:.3f}", share[size_t(e)]);
  }
  fmt::print("\n=== skew {}: {} tokens over {} ===\n", skew.name, T, L.placement.describe());
  fmt::print("target first-choice share  e0..:{}\nrealised first-choice share:   {}\n", pop, real);
  fmt::print("{:<9} {:>5} {:>9} {:>9} {:>6} {:>7} {:>6} {:>6} {:>11} {:>11} {:>7} {:>7} {:>8}\n",
             "policy", "gamma", "layer ms", "policy us", "DT", "dropped", "added", "kept",
             "E max/mean", "D max/mean", "busiest", "EP lat", "E-max");
  fmt::print("{:<9} {:>5} {:>9} {:>9} {:>6} {:>7} {:>6} {:>6} {:>11} {:>11} {:>7} {:>7} {:>8}\n",
             "", "", "median", "median", "", "pairs", "pairs", "pairs", "bef->aft", "bef->aft",
             "device", "ratio", "ratio");

  Json rows = Json::array();
  moe::LoadStats timing_stats(1, E);  // the pipeline's last stage runs in timed calls too
  timing_stats.set_placement(L.placement);
  for (moe::CapacityPolicy policy : policies) {
    for (double gamma : gammas) {
      moe::MoeRuntime rt;
      rt.capacity.policy = policy;
      rt.capacity.factor = gamma;
      rt.capacity.reroute_rounds = L.reroute_rounds;
      rt.capacity.seed = L.seed;
      rt.placement = L.placement;
      moe::LoadStats stats(1, E);
      stats.set_placement(L.placement);
      rt.stats = &stats;
      moe::moe_forward(block, x.data(), T, H, out.data(), scratch, rt,
                       0);  // measured call (+ warm-up)

      rt.stats = &timing_stats;
      const bench::Timing tl = bench::time_median(
          [&] { moe::moe_forward(block, x.data(), T, H, out.data(), scratch, rt, 0); }, 0, L.reps);

      // The policy stage alone: each device slice, as moe_forward applies it.
      const int slots = moe::capacity_slots(rt.capacity, K, E, L.placement);
      std::vector<int32_t> pids(size_t(T * slots));
      std::vector<float> pweights(size_t(T * slots));
      moe::CapacityOutcome scratch_outcome;
      const bench::Timing tp = bench::time_median(
          [&] {
            scratch_outcome.reset(E);
            for (int d = 0; d < D; ++d) {
              const int64_t b = L.placement.token_begin(d, T),
                            n = L.placement.token_begin(d + 1, T) - b;
              moe::apply_capacity(rt.capacity, L.router, scores.data() + b * E, rids.data() + b * K,
                                  rweights.data() + b * K, n, L.placement, d,
                                  moe::CapacityCall{uint64_t(d), false}, pids.data() + b * slots,
                                  pweights.data() + b * slots, slots, scratch_outcome);
            }
          },
          2, L.policy_reps);

      // Loads, as LoadStats reports them.
      std::vector<int64_t> before(static_cast<size_t>(E)), after(static_cast<size_t>(E)),
          dev_before(static_cast<size_t>(D), 0), dev_after(static_cast<size_t>(D));
      for (int e = 0; e < E; ++e) {
        before[size_t(e)] = stats.count_before(0, e);
        after[size_t(e)] = stats.count(0, e);
        dev_before[size_t(L.placement.device_of(e))] += before[size_t(e)];
      }
      for (int d = 0; d < D; ++d) dev_after[size_t(d)] = stats.device_count(0, d);
      const int64_t max_dev_before = *std::max_element(dev_before.begin(), dev_before.end());
      const int64_t max_dev_after = *std::max_element(dev_after.begin(), dev_after.end());
      const int64_t max_e_before = *std::max_element(before.begin(), before.end());
      const int64_t max_e_after = *std::max_element(after.begin(), after.end());
      const int64_t kept = std::accumulate(after.begin(), after.end(), int64_t(0));
      const auto& tot = stats.layer_totals(0);
      const int busiest =
          int(std::max_element(dev_after.begin(), dev_after.end()) - dev_after.begin());
      double dev_mm_before = 0;
      {
        const int64_t sum = std::accumulate(dev_before.begin(), dev_before.end(), int64_t(0));
        dev_mm_before = sum == 0 ? 0.0 : double(max_dev_before) * D / double(sum);
      }
      const double ep_ratio =
          max_dev_before == 0 ? 0.0 : double(max_dev_after) / double(max_dev_before);
      const double e_ratio = max_e_before == 0 ? 0.0 : double(max_e_after) / double(max_e_before);

      fmt::print(
          "{:<9} {:>5.2f} {:>9.2f} {:>9.1f} {:>6.3f} {:>7} {:>6} {:>6} {:>11} {:>11} {:>7} "
          "{:>7.3f} {:>8.3f}\n",
          moe::capacity_policy_name(policy), gamma, tl.median_s * 1e3, tp.median_s * 1e6,
          stats.dropped_fraction(0), tot.dropped, tot.added, kept,
          ratio_str(stats.max_over_mean_before(0), stats.max_over_mean(0)),
          ratio_str(dev_mm_before, stats.device_max_over_mean(0)),
          fmt::format("d{}:{}", busiest, max_dev_after), ep_ratio, e_ratio);
      rows.push_back({{"policy", moe::capacity_policy_name(policy)},
                      {"gamma", gamma},
                      {"capacity", moe::expert_capacity(gamma, T / D, K, E)},
                      {"describe", rt.capacity.describe()},
                      {"layer_s_median", tl.median_s},
                      {"layer_s_min", tl.min_s},
                      {"layer_s_max", tl.max_s},
                      {"policy_s_median", tp.median_s},
                      {"dropped_fraction", stats.dropped_fraction(0)},
                      {"routed", tot.routed},
                      {"overflow", tot.overflow},
                      {"dropped", tot.dropped},
                      {"added", tot.added},
                      {"rerouted", tot.rerouted},
                      {"kept", kept},
                      {"expert_load_before", before},
                      {"expert_load_after", after},
                      {"device_load_before", dev_before},
                      {"device_load_after", dev_after},
                      {"expert_max_over_mean_before", stats.max_over_mean_before(0)},
                      {"expert_max_over_mean_after", stats.max_over_mean(0)},
                      {"device_max_over_mean_before", dev_mm_before},
                      {"device_max_over_mean_after", stats.device_max_over_mean(0)},
                      {"busiest_device", busiest},
                      {"busiest_device_load_after", max_dev_after},
                      {"busiest_device_load_dropless", max_dev_before},
                      {"modelled_ep_latency_ratio", ep_ratio},
                      {"busiest_expert_ratio", e_ratio},
                      {"load_stats", stats.to_json()}});
    }
  }
  fmt::print(
      "EP lat ratio = busiest device's kept pairs / the dropless busiest device's pairs "
      "(modelled layer latency under EP, 1 = no gain); E-max ratio = the same per expert.\n");
  return {{"skew", skew.name},
          {"target_first_choice_share", target_share},
          {"realised_first_choice_share", share},
          {"rows", rows}};
}

// ---------------------------------------------------------------------------------------
// Part 2: grouped expert FFN vs sgemm on the same shapes.

// Variants timed round-robin: each round runs every variant once, so a slow phase of this
// shared machine (other processes, the bandwidth phase) hits all of them alike. Returns the
// per-variant seconds of every round, sorted into Timings, plus the per-round ratios
// t[0] / t[i] (speed of variant i relative to variant 0) whose median is robust to noise.
struct Interleaved {
  std::vector<bench::Timing> timing;
  std::vector<double> speed_vs_first;  // median over rounds of t[0] / t[i]
};
Interleaved time_interleaved(const std::vector<std::function<void()>>& fns, int warmup,
                             int rounds) {
  const size_t V = fns.size();
  for (int w = 0; w < warmup; ++w)
    for (const auto& f : fns) f();
  std::vector<std::vector<double>> t(V);
  for (int r = 0; r < rounds; ++r)
    for (size_t v = 0; v < V; ++v) {
      const auto t0 = std::chrono::steady_clock::now();
      fns[v]();
      t[v].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  Interleaved out;
  for (size_t v = 0; v < V; ++v) {
    std::vector<double> ratio;
    for (int r = 0; r < rounds; ++r) ratio.push_back(t[0][size_t(r)] / t[v][size_t(r)]);
    std::sort(ratio.begin(), ratio.end());
    out.speed_vs_first.push_back(ratio[ratio.size() / 2]);
    std::sort(t[v].begin(), t[v].end());
    out.timing.push_back(bench::Timing{t[v][t[v].size() / 2], t[v].front(), t[v].back(), rounds});
  }
  return out;
}

// The routed batch of one FFN case: each expert's rows contiguous, as moe_forward lays them out.
struct GroupedBatch {
  int64_t tokens = 0;
  std::vector<int64_t> offsets;  // [E + 1]
  std::vector<float> permuted;   // [rows, H]
  int64_t rows() const { return offsets.back(); }
  int64_t rows_of(int e) const { return offsets[size_t(e) + 1] - offsets[size_t(e)]; }
};

GroupedBatch make_batch(const LayerSetup& L, const Skew& skew, int64_t T, const std::string& noise,
                        double noise_scale) {
  const int E = L.E, K = L.K;
  const int64_t H = L.H;
  const auto x = make_tokens(skew, T, H, noise, noise_scale, L.seed * 7919 + uint64_t(T));
  std::vector<float> logits(size_t(T * E)), weights(size_t(T * K));
  std::vector<int32_t> ids(size_t(T * K));
  ops::sgemm_nt(T, E, H, x.data(), H, L.router_weight.data(), H, logits.data(), E);
  moe::route(L.router, logits.data(), T, nullptr, ids.data(), weights.data());
  moe::DispatchPlan plan;
  moe::plan_dispatch(ids.data(), weights.data(), T, K, E, plan);
  GroupedBatch b;
  b.tokens = T;
  b.offsets = plan.offsets;
  b.permuted.resize(size_t(plan.num_rows() * H));
  moe::gather_rows(plan, x.data(), H, b.permuted.data());
  return b;
}

// Candidate matmul paths for the investigation (all compute Y[n, rows] = X W^T).
using MatmulPath = void (*)(const ops::WeightView& w, const float* x, int64_t n, int64_t ldx,
                            float* y, int64_t ldy, int nt);

// The stream kernel applied to blocks of activation rows small enough to stay in L2 with the
// weight block (the shipped kernel walks all n rows of X for every 4 weight rows, so X comes
// from L3 once n * cols * 4 bytes outgrows the 1 MiB L2). Weights are re-read once per block.
constexpr int64_t kXBlockBytes = 384 << 10;
int64_t x_block_rows(int64_t cols) {
  return std::max<int64_t>(4, (kXBlockBytes / (cols * 4)) & ~int64_t(3));
}
void matmul_stream_xblocked(const ops::WeightView& w, const float* x, int64_t n, int64_t ldx,
                            float* y, int64_t ldy, int nt) {
  const int64_t nb = x_block_rows(w.cols);
  for (int64_t j = 0; j < n; j += nb)
    ops::detail::matmul_stream(w, x + j * ldx, std::min(nb, n - j), ldx, y + j * ldy, ldy, nt);
}

// One expert's SwiGLU FFN through a given matmul path (what ffn_forward does through ops::matmul).
void ffn_via(MatmulPath mm, const moe::FfnWeights& w, const float* x, int64_t n, float* out,
             float* g, float* u, int nt) {
  const int64_t H = w.hidden(), I = w.intermediate();
  mm(w.gate, x, n, H, g, I, nt);
  mm(w.up, x, n, H, u, I, nt);
  ops::swiglu(g, u, n * I, g);
  mm(w.down, g, n, I, out, H, nt);
}

Json run_ffn(const LayerSetup& L, const Skew& skew, const std::vector<int64_t>& token_counts,
             const std::vector<int>& threads, int reps, const std::string& noise,
             double noise_scale) {
  const Experts& X = *L.experts;
  const int E = L.E;
  const int64_t H = X.H, I = X.I;
  Json cases = Json::array();
  const std::string dt(dtype_name(X.dtype));

  // The machine's sgemm peak on a square problem (machine.md's 1024^3 row).
  Json peaks = Json::array();
  std::vector<double> peak_of(threads.size());
  {
    const int64_t n = 1024;
    std::vector<float> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
    Rng rng(3);
    for (float& v : a) v = float(rng.uniform() - 0.5);
    for (float& v : b) v = float(rng.uniform() - 0.5);
    for (size_t t = 0; t < threads.size(); ++t) {
      ops::set_num_threads(threads[t]);
      const auto tm =
          bench::time_median([&] { ops::sgemm_nt(n, n, n, a.data(), n, b.data(), n, c.data(), n); },
                             2, std::max(reps, 5));
      peak_of[t] = 2.0 * double(n * n * n) / tm.median_s * 1e-9;
      peaks.push_back(
          {{"m", n}, {"n", n}, {"k", n}, {"threads", threads[t]}, {"gflops", peak_of[t]}});
    }
  }

  fmt::print(
      "\n=== grouped expert FFN (gate+up+down over each expert's contiguous rows) vs sgemm ===\n");
  fmt::print(
      "skew {} (dropless), {} weights. ffn = moe::ffn_forward per expert as moe_forward runs it; "
      "sgemm = ops::sgemm_nt (OpenBLAS) on F32 copies of the same weights, same per-expert shapes, "
      "no SwiGLU; peak = sgemm 1024^3. Candidate paths: sgemm path = ops matmul's widen+sgemm path "
      "forced; xblk = stream kernel over L2-sized blocks of activation rows.\n",
      skew.name, dt);
  fmt::print("{:>6} {:>14} {:>3} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8}\n", "tokens",
             "rows/expert", "thr", "ffn", "sgemm", "FFN/", "peak", "ffn/", "sgemm-pth", "/sgemm",
             "xblk", "/sgemm");
  fmt::print("{:>6} {:>14} {:>3} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8}\n", "",
             "min/mean/max", "", "GF/s", "GF/s", "SGEMM", "GF/s", "peak", "ffn GF/s", "",
             "ffn GF/s", "");
  for (int64_t T : token_counts) {
    const GroupedBatch b = make_batch(L, skew, T, noise, noise_scale);
    const int64_t rows = b.rows();
    int64_t rmin = INT64_MAX, rmax = 0;
    std::vector<int64_t> per_expert;
    for (int e = 0; e < E; ++e) {
      rmin = std::min(rmin, b.rows_of(e));
      rmax = std::max(rmax, b.rows_of(e));
      per_expert.push_back(b.rows_of(e));
    }
    const double flops = 6.0 * double(rows) * double(H) * double(I);
    std::vector<float> out(size_t(rows * H)), g(size_t(rmax * I)), u(size_t(rmax * I));
    moe::FfnScratch fs;
    for (size_t ti = 0; ti < threads.size(); ++ti) {
      const int nt = threads[ti];
      ops::set_num_threads(nt);
      // (b) the expert FFN stage exactly as moe_forward runs it.
      auto shipped = [&] {
        for (int e = 0; e < E; ++e) {
          const int64_t o = b.offsets[size_t(e)], n = b.rows_of(e);
          if (n > 0)
            moe::ffn_forward(X.views[size_t(e)], b.permuted.data() + o * H, n, out.data() + o * H,
                             fs);
        }
      };
      // (a) sgemm on the same shapes (F32 weights).
      auto sgemm = [&] {
        for (int e = 0; e < E; ++e) {
          const int64_t o = b.offsets[size_t(e)], n = b.rows_of(e);
          if (n == 0) continue;
          const auto& w = X.views_f32[size_t(e)];
          const float* xe = b.permuted.data() + o * H;
          ops::sgemm_nt(n, I, H, xe, H, static_cast<const float*>(w.gate.data), H, g.data(), I);
          ops::sgemm_nt(n, I, H, xe, H, static_cast<const float*>(w.up.data), H, u.data(), I);
          ops::sgemm_nt(n, H, I, g.data(), I, static_cast<const float*>(w.down.data), I,
                        out.data() + o * H, H);
        }
      };
      auto via = [&](MatmulPath mm) {
        return [&, mm] {
          for (int e = 0; e < E; ++e) {
            const int64_t o = b.offsets[size_t(e)], n = b.rows_of(e);
            if (n > 0)
              ffn_via(mm, X.views[size_t(e)], b.permuted.data() + o * H, n, out.data() + o * H,
                      g.data(), u.data(), nt);
          }
        };
      };
      // Variant 0 is sgemm, so speed_vs_first[i] = variant i's GFLOP/s over sgemm's, per round.
      const Interleaved m = time_interleaved(
          {sgemm, shipped, via(&ops::detail::matmul_sgemm), via(&matmul_stream_xblocked)}, 1, reps);
      const auto &t_sg = m.timing[0], &t_ffn = m.timing[1];
      const double gs = flops / t_sg.median_s * 1e-9, gf = flops / t_ffn.median_s * 1e-9,
                   gp = flops / m.timing[2].median_s * 1e-9,
                   gx = flops / m.timing[3].median_s * 1e-9;
      const double rf = m.speed_vs_first[1], rp = m.speed_vs_first[2], rx = m.speed_vs_first[3];
      fmt::print(
          "{:>6} {:>14} {:>3} {:>9.1f} {:>9.1f} {:>9.2f} {:>9.1f} {:>8.2f} {:>9.1f} {:>8.2f} "
          "{:>9.1f} {:>8.2f}\n",
          T, fmt::format("{}/{}/{}", rmin, rows / E, rmax), nt, gf, gs, rf, peak_of[ti],
          gf / peak_of[ti], gp, rp, gx, rx);
      cases.push_back({{"tokens", T},
                       {"rows", rows},
                       {"rows_per_expert", per_expert},
                       {"threads", nt},
                       {"flops", flops},
                       {"ffn_gflops", gf},
                       {"ffn_s_median", t_ffn.median_s},
                       {"ffn_s_min", t_ffn.min_s},
                       {"ffn_s_max", t_ffn.max_s},
                       {"sgemm_same_shapes_gflops", gs},
                       {"sgemm_s_median", t_sg.median_s},
                       {"ffn_over_sgemm", rf},
                       {"ffn_over_sgemm_of_medians", gf / gs},
                       {"peak_gflops", peak_of[ti]},
                       {"ffn_over_peak", gf / peak_of[ti]},
                       {"ffn_sgemm_path_gflops", gp},
                       {"ffn_sgemm_path_over_sgemm", rp},
                       {"ffn_stream_xblocked_gflops", gx},
                       {"ffn_stream_xblocked_over_sgemm", rx}});
    }
  }
  fmt::print(
      "GF/s from the median time of {} interleaved rounds; ratios are medians of the per-round "
      "ratios.\n"
      "target (issue): grouped expert computation >= 0.80 x sgemm at prefill sizes (column "
      "FFN/SGEMM).\n",
      reps);

  // Why: each matmul of the FFN through each path at the mean rows per expert.
  Json paths = Json::array();
  fmt::print(
      "\nmatmul paths at the mean rows per expert, each of the E experts' matrices in turn ({} "
      "weights, GFLOP/s): stream = Highway kernel "
      "(ops::matmul's path up to 512 rows), xblk = stream over L2-sized row blocks of X, sgemm-pth "
      "= "
      "{}OpenBLAS sgemm per thread (its path above 512 rows), sgemm_nt = F32 reference\n",
      dt, X.dtype == DType::F32 ? "" : "widen panels + ");
  fmt::print("{:>6} {:>12} {:>9} {:>3} {:>9} {:>9} {:>9} {:>9}\n", "rows", "W rows x cols",
             "X bytes", "thr", "stream", "xblk", "sgemm-pth", "sgemm_nt");
  for (int64_t T : token_counts) {
    const int64_t n = std::max<int64_t>(1, T * L.K / E);
    std::vector<float> xin(size_t(n * std::max(H, I))), y(size_t(n * std::max(H, I)));
    Rng rng(5);
    for (float& v : xin) v = float(rng.uniform() - 0.5);
    for (int which = 0; which < 2; ++which) {
      // Every expert's matrix in turn, so the weights come from DRAM as in the layer.
      auto weight = [&](const moe::FfnWeights& f) { return which == 0 ? f.gate : f.down; };
      const auto& w0 = weight(X.views[0]);
      const double f = 2.0 * double(n) * double(w0.rows) * double(w0.cols) * E;
      for (int nt : threads) {
        ops::set_num_threads(nt);
        auto all = [&](auto one) {
          return std::function<void()>([&, one] {
            for (int e = 0; e < E; ++e) one(e);
          });
        };
        const Interleaved m = time_interleaved(
            {all([&](int e) {
               const auto w = weight(X.views[size_t(e)]);
               ops::detail::matmul_stream(w, xin.data(), n, w.cols, y.data(), w.rows, nt);
             }),
             all([&](int e) {
               const auto w = weight(X.views[size_t(e)]);
               matmul_stream_xblocked(w, xin.data(), n, w.cols, y.data(), w.rows, nt);
             }),
             all([&](int e) {
               const auto w = weight(X.views[size_t(e)]);
               ops::detail::matmul_sgemm(w, xin.data(), n, w.cols, y.data(), w.rows, nt);
             }),
             all([&](int e) {
               const auto wf = weight(X.views_f32[size_t(e)]);
               ops::sgemm_nt(n, wf.rows, wf.cols, xin.data(), wf.cols,
                             static_cast<const float*>(wf.data), wf.cols, y.data(), wf.rows);
             })},
            1, reps);
        const double gs = f / m.timing[0].median_s * 1e-9, gx = f / m.timing[1].median_s * 1e-9,
                     gg = f / m.timing[2].median_s * 1e-9, gc = f / m.timing[3].median_s * 1e-9;
        fmt::print("{:>6} {:>12} {:>9} {:>3} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f}\n", n,
                   fmt::format("{}x{}", w0.rows, w0.cols),
                   fmt::format("{}K", n * w0.cols * 4 / 1024), nt, gs, gx, gg, gc);
        paths.push_back({{"n", n},
                         {"rows", w0.rows},
                         {"cols", w0.cols},
                         {"threads", nt},
                         {"dtype", dt},
                         {"x_bytes", n * w0.cols * 4},
                         {"stream_gflops", gs},
                         {"stream_xblocked_gflops", gx},
                         {"sgemm_path_gflops", gg},
                         {"sgemm_nt_f32_gflops", gc}});
      }
    }
  }
  return {{"skew", skew.name},
          {"dtype", dt},
          {"peak", peaks},
          {"cases", cases},
          {"matmul_paths", paths}};
}

}  // namespace

int main(int argc, char** argv) {
  ops::prefer_fast_blas(argc, argv);
  CLI::App app{
      "One MoE layer under controlled routing skew: capacity policies x gamma (layer time, "
      "modelled EP latency, load balance, DT), and grouped expert FFN GFLOP/s vs sgemm"};
  int64_t hidden = 1024, ffn = 2816, tokens = 512;
  int experts = 8, top_k = 2, devices = 4, reps = 5, policy_reps = 50, reroute_rounds = 3;
  int layer_threads = 0;
  std::string dtype = "F32", noise = "gumbel", order = "sequential", json_path;
  double noise_scale = 1.0, hot_share = 0.5;
  uint64_t seed = 1;
  bool quick = false;
  std::vector<std::string> skews = {"uniform", "zipf0.5", "zipf1.0", "zipf1.5", "zipf2.0", "hot"};
  std::vector<std::string> policy_names = {"none",   "score",    "order",   "reverse",
                                           "random", "expanded", "reroute", "device"};
  std::vector<double> gammas = {1.0, 1.25, 1.5, 2.0};
  std::vector<std::string> sections = {"layer", "ffn"};
  std::vector<int64_t> ffn_tokens = {128, 512, 2048};
  std::vector<int> ffn_threads = {1, 2};
  std::string ffn_skew = "uniform";

  app.add_option("--hidden", hidden, "hidden size H")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  app.add_option("--ffn", ffn, "expert FFN (intermediate) size I")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 17));
  app.add_option("--experts", experts, "routed experts E (<= hidden)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1024));
  app.add_option("--top-k", top_k, "experts per token k")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--tokens", tokens, "tokens in the prefill batch (layer part)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  app.add_option("--dtype", dtype, "expert weight dtype")
      ->capture_default_str()
      ->check(CLI::IsMember({"F32", "BF16", "F16"}));
  app.add_option("--devices", devices,
                 "expert-parallel devices D (contiguous placement; tokens split in D slices)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--skews", skews, "uniform, zipf<s> (e.g. zipf1.0), hot, hot<share>")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--hot-share", hot_share, "first-choice share of the hot expert for skew 'hot'")
      ->capture_default_str();
  app.add_option(
         "--rank-order", order,
         "which expert gets which popularity rank: sequential (e0 hottest; "
         "hot experts share device 0), spread (consecutive ranks on different devices), shuffled")
      ->capture_default_str()
      ->check(CLI::IsMember({"sequential", "spread", "shuffled"}));
  app.add_option("--noise", noise,
                 "per-token logit noise: gumbel (first choice ~ p exactly) or gaussian")
      ->capture_default_str()
      ->check(CLI::IsMember({"gumbel", "gaussian"}));
  app.add_option("--noise-scale", noise_scale, "noise scale (Gumbel beta / Gaussian sigma)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--policies", policy_names, "capacity policies")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"none", "score", "order", "reverse", "random", "expanded", "reroute", "device"}));
  app.add_option("--gammas", gammas, "capacity factors gamma")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--reroute-rounds", reroute_rounds, "re-selection rounds of the reroute policy")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--threads", layer_threads, "threads for the layer part (0 = all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--reps", reps, "timed repetitions per case (median reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--policy-reps", policy_reps, "timed repetitions of the policy stage alone")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--ffn-tokens", ffn_tokens, "token counts of the grouped-FFN part")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--ffn-threads", ffn_threads, "thread counts of the grouped-FFN part")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--ffn-skew", ffn_skew, "routing skew of the grouped-FFN part")
      ->capture_default_str();
  app.add_option("--sections", sections, "parts to run: layer, ffn")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember({"layer", "ffn"}));
  app.add_option("--seed", seed, "seed of weights, tokens and random drops")->capture_default_str();
  app.add_flag("--quick", quick,
               "smoke run: skews uniform,zipf1.0,hot; gammas 1,1.5; 2 reps; FFN at 512 tokens");
  app.add_option("--json", json_path, "write every figure to this JSON file");
  CLI11_PARSE(app, argc, argv);

  try {
    if (experts > hidden)
      throw Error(fmt::format("--experts {} > --hidden {}: the router trick needs E <= H", experts,
                              hidden));
    if (top_k > experts) throw Error(fmt::format("--top-k {} > --experts {}", top_k, experts));
    if (devices > experts)
      throw Error(fmt::format("--devices {} > --experts {}", devices, experts));
    for (double g : gammas)
      if (!(g > 0 && g < 1e6))
        throw Error(fmt::format("--gammas: {} is not a positive capacity factor", g));
    for (int64_t t : ffn_tokens)
      if (t < 1) throw Error("--ffn-tokens: counts must be >= 1");
    for (int t : ffn_threads)
      if (t < 1) throw Error("--ffn-threads: counts must be >= 1");
    if (quick) {
      skews = {"uniform", "zipf1.0", "hot"};
      gammas = {1.0, 1.5};
      reps = std::min(reps, 2);
      policy_reps = std::min(policy_reps, 10);
      ffn_tokens = {512};
    }
    const DType dt = dtype == "F32" ? DType::F32 : dtype == "BF16" ? DType::BF16 : DType::F16;
    auto wanted = [&](const char* s) {
      return std::find(sections.begin(), sections.end(), s) != sections.end();
    };

    const char* coretype_env = std::getenv("OPENBLAS_CORETYPE");
    const int64_t best_target = hwy::SupportedTargets() & HWY_TARGETS;
    fmt::print("SIMD target {}, OpenBLAS core {} (OPENBLAS_CORETYPE={}), {} cores\n",
               hwy::TargetName(best_target & -best_target), ops::blas_core_name(),
               coretype_env ? coretype_env : "(unset)", omp_get_num_procs());

    LayerSetup L;
    L.T = tokens;
    L.H = hidden;
    L.E = experts;
    L.K = top_k;
    L.router.num_experts = experts;
    L.router.top_k = top_k;
    L.router.score = moe::ScoreFunc::kSoftmax;
    L.router.renormalize = true;  // Mixtral
    L.router_weight.assign(size_t(experts * hidden), 0.0f);
    for (int e = 0; e < experts; ++e) L.router_weight[size_t(e * hidden + e)] = 1.0f;
    L.placement = moe::Placement::contiguous(experts, devices);
    L.reps = reps;
    L.policy_reps = policy_reps;
    L.reroute_rounds = reroute_rounds;
    L.seed = seed;
    std::vector<moe::CapacityPolicy> policies;
    for (const auto& p : policy_names) policies.push_back(moe::parse_capacity_policy(p));
    const auto ranks = rank_order(order, experts, L.placement, seed);
    std::vector<Skew> skew_list;
    for (const auto& s : skews) skew_list.push_back(make_skew(s, experts, hot_share, ranks));
    const Skew ffn_skew_v = make_skew(ffn_skew, experts, hot_share, ranks);

    fmt::print("generating {} experts of {}x{} ({} weights, {:.0f} MB) ...\n", experts, hidden, ffn,
               dtype, double(size_t(experts) * 3 * size_t(hidden * ffn) * dtype_size(dt)) / 1e6);
    const Experts weights(experts, hidden, ffn, dt, seed);
    L.experts = &weights;

    Json layer = Json::array();
    int layer_threads_used = layer_threads;
    if (wanted("layer")) {
      ops::set_num_threads(layer_threads);
      layer_threads_used = ops::num_threads();
      fmt::print(
          "layer: H {} I {} E {} top-{} (softmax, renormalised), {} tokens, {} threads, noise {} "
          "x{}, "
          "rank order {}, {} reps (median)\n",
          hidden, ffn, experts, top_k, tokens, ops::num_threads(), noise, noise_scale, order, reps);
      for (size_t i = 0; i < skew_list.size(); ++i) {
        const auto x = make_tokens(skew_list[i], tokens, hidden, noise, noise_scale,
                                   seed * 1315423911u + name_hash(skews[i]));
        layer.push_back(run_skew(L, skew_list[i], skew_list[i].popularity, x, policies, gammas));
      }
    }
    Json ffn_part;
    if (wanted("ffn"))
      ffn_part =
          run_ffn(L, ffn_skew_v, ffn_tokens, ffn_threads, std::max(reps, 3), noise, noise_scale);

    if (!json_path.empty()) {
      Json doc = {{"bench", "bench_moe_layer"},
                  {"simd_target", hwy::TargetName(best_target & -best_target)},
                  {"openblas_core", ops::blas_core_name()},
                  {"openblas_coretype_env", coretype_env ? coretype_env : ""},
                  {"hidden", hidden},
                  {"ffn", ffn},
                  {"experts", experts},
                  {"top_k", top_k},
                  {"tokens", tokens},
                  {"dtype", dtype},
                  {"devices", devices},
                  {"placement", L.placement.describe()},
                  {"rank_order", order},
                  {"noise", noise},
                  {"noise_scale", noise_scale},
                  {"hot_share", hot_share},
                  {"layer_threads", layer_threads_used},
                  {"reps", reps},
                  {"seed", seed},
                  {"layer", layer},
                  {"grouped_ffn", ffn_part}};
      io::write_text_file_atomic(json_path, doc.dump(2) + "\n");
      fmt::print("wrote {}\n", json_path);
    }
  } catch (const sy::Error& e) {
    fmt::print(stderr, "bench_moe_layer: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
