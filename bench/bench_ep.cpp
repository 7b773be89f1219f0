// Expert parallelism over MPI, one MoE layer of machine.md's shape A per rank:
//  1. where a layer's time goes on each rank (route, dispatch, expert compute, combine, waits)
//     under uniform routing, dropless;
//  2. the row exchange's effective GB/s (pack + counts + MPI_Alltoallv there and back, experts
//     replaced by a copy) against a raw MPI_Alltoallv of the same bytes, in the same run;
//  3. the layer time against the busiest rank's load under skewed routing, dropless and with
//     capacity-aware token drop (score) at gamma 1.0 / 1.5 / 2.0.
//   mpirun --oversubscribe --allow-run-as-root -np 2 build/bench/bench_ep --json ep.json
//
// Routing is set, not learned: the router weight is the identity on the first E hidden
// columns, and those columns of each token hold log(p_e) + Gumbel noise, so moe_forward's own
// router sees exactly these logits and a token's first choice is drawn from p.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>

#include "common/timing.h"
#include "moe/moe_layer.h"
#include "ops/blas_env.h"
#include "ops/threads.h"
#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"
#include "util/dtype.h"
#include "util/error.h"

using namespace sy;
using Json = nlohmann::json;

namespace {

struct Options {
  int64_t hidden = 1024, ffn = 2816, tokens = 256;
  int experts = 8, top_k = 2, reps = 5, threads = 1;
  std::string dtype = "BF16";
  std::vector<std::string> skews{"uniform", "zipf1.0", "hot0.5"};
  std::vector<double> gammas{1.0, 1.5, 2.0};
  std::string json;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Popularity of each expert's first choice: uniform, zipf<s> (1/r^s), hot<share>.
std::vector<double> popularity(const std::string& name, int E) {
  std::vector<double> p(size_t(E), 1.0);
  if (name.rfind("zipf", 0) == 0) {
    const double s = std::stod(name.substr(4));
    for (int e = 0; e < E; ++e) p[size_t(e)] = 1.0 / std::pow(e + 1, s);
  } else if (name.rfind("hot", 0) == 0) {
    const double share = name.size() > 3 ? std::stod(name.substr(3)) : 0.5;
    for (int e = 1; e < E; ++e) p[size_t(e)] = (1 - share) / (E - 1);
    p[0] = share;
  } else if (name != "uniform") {
    fail("unknown skew '{}' (uniform, zipf<s>, hot<share>)", name);
  }
  double sum = 0;
  for (double v : p) sum += v;
  for (double& v : p) v /= sum;
  return p;
}

// This rank's tokens: the first E columns carry log(p_e) + Gumbel noise.
std::vector<float> make_tokens(const std::vector<double>& p, int64_t T, int64_t H, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(1e-12, 1.0);
  std::uniform_real_distribution<float> other(-1.0f, 1.0f);
  std::vector<float> x(size_t(T * H));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      x[size_t(t * H + h)] = h < int64_t(p.size())
                                 ? float(std::log(p[size_t(h)]) - std::log(-std::log(u(rng))))
                                 : other(rng);
  return x;
}

// Random expert weights in the benchmark dtype, allocated only for this rank's experts.
struct Layer {
  moe::RouterConfig router;
  std::vector<float> router_weight;  // [E, H]
  std::vector<std::vector<uint16_t>> storage16;
  std::vector<std::vector<float>> storage32;
  std::vector<moe::FfnWeights> experts;
  moe::MoeBlock block;
};

ops::WeightView random_matrix(Layer& L, DType dt, int64_t rows, int64_t cols,
                              std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f / std::sqrt(float(cols)));
  std::vector<float> v(size_t(rows * cols));
  for (float& x : v) x = n(rng);
  if (dt == DType::F32) {
    L.storage32.push_back(std::move(v));
    return {dt, rows, cols, L.storage32.back().data()};
  }
  L.storage16.emplace_back(v.size());
  auto& dst = L.storage16.back();
  for (size_t i = 0; i < v.size(); ++i)
    dst[i] = dt == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  return {dt, rows, cols, L.storage16.back().data()};
}

std::unique_ptr<Layer> make_layer(const Options& o, const moe::Placement& pl, int rank) {
  auto L = std::make_unique<Layer>();
  L->router.num_experts = o.experts;
  L->router.top_k = o.top_k;
  L->router.renormalize = true;
  L->router_weight.assign(size_t(o.experts * o.hidden), 0.0f);
  for (int e = 0; e < o.experts; ++e) L->router_weight[size_t(e * o.hidden + e)] = 1.0f;
  const DType dt = o.dtype == "F32" ? DType::F32 : o.dtype == "F16" ? DType::F16 : DType::BF16;
  L->storage16.reserve(size_t(3 * o.experts));
  L->storage32.reserve(size_t(3 * o.experts));
  L->experts.resize(size_t(o.experts));
  std::mt19937_64 rng(42);
  for (int32_t e : pl.experts_on(rank)) {
    auto& x = L->experts[size_t(e)];
    x.gate = random_matrix(*L, dt, o.ffn, o.hidden, rng);
    x.up = random_matrix(*L, dt, o.ffn, o.hidden, rng);
    x.down = random_matrix(*L, dt, o.hidden, o.ffn, rng);
  }
  L->block.router = &L->router;
  L->block.router_weight = L->router_weight.data();
  L->block.experts = L->experts;
  return L;
}

// One timed layer call on every rank, started together; returns this rank's wall time.
double timed_call(const parallel::Communicator& comm, const Layer& L, const std::vector<float>& x,
                  int64_t T, int64_t H, std::vector<float>& out, moe::MoeScratch& s,
                  const moe::MoeRuntime& rt) {
  comm.barrier();
  const double t0 = now();
  moe::moe_forward(L.block, x.data(), T, H, out.data(), s, rt);
  return now() - t0;
}

void copy_expert(int, const float* rows, int64_t n, int64_t H, float* out, void*) {
  std::copy(rows, rows + n * H, out);
}

}  // namespace

int main(int argc, char** argv) {
  ops::prefer_fast_blas(argc, argv);
  const parallel::Communicator& comm = parallel::Communicator::world(&argc, &argv);
  Options o;
  CLI::App app{
      "One expert-parallel MoE layer over MPI ranks: time breakdown, all-to-all GB/s vs raw "
      "MPI_Alltoallv, and layer time vs the busiest rank's load under skew"};
  app.add_option("--hidden", o.hidden, "Hidden size")->capture_default_str();
  app.add_option("--ffn", o.ffn, "Expert FFN width")->capture_default_str();
  app.add_option("--experts", o.experts, "Experts")->capture_default_str();
  app.add_option("--top-k", o.top_k, "Experts per token")->capture_default_str();
  app.add_option("--tokens", o.tokens, "Tokens per rank per layer call")->capture_default_str();
  app.add_option("--dtype", o.dtype, "Expert weight dtype: BF16, F16, F32")->capture_default_str();
  app.add_option("--reps", o.reps, "Timed repetitions (median reported)")->capture_default_str();
  app.add_option("--threads", o.threads, "Threads per rank")->capture_default_str();
  app.add_option("--skews", o.skews, "Routing skews: uniform, zipf<s>, hot<share>")->delimiter(',');
  app.add_option("--gammas", o.gammas, "Capacity factors for token drop")->delimiter(',');
  app.add_option("--json", o.json, "Write the results as JSON (rank 0)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    ops::set_num_threads(o.threads);
    const int D = comm.size(), me = comm.rank();
    if (!comm.distributed())
      fail("run under mpirun with at least 2 ranks, e.g. mpirun -np 2 bench_ep");
    const moe::Placement pl = moe::Placement::contiguous(o.experts, D);
    const auto L = make_layer(o, pl, me);
    const int64_t T = o.tokens, H = o.hidden;
    std::vector<float> out(size_t(T * H));
    moe::MoeScratch scratch;
    Json result = {{"ranks", D},       {"hidden", H},
                   {"ffn", o.ffn},     {"experts", o.experts},
                   {"top_k", o.top_k}, {"tokens_per_rank", T},
                   {"dtype", o.dtype}, {"threads_per_rank", o.threads}};

    // ---- 1. time breakdown, uniform routing, dropless
    {
      const auto x = make_tokens(popularity("uniform", o.experts), T, H, 1000 + uint64_t(me));
      parallel::ExpertParallelBackend ep(comm, pl, 1);
      moe::MoeRuntime rt;
      rt.placement = pl;
      rt.source_device = me;
      rt.backend = &ep;
      std::vector<double> wall;
      timed_call(comm, *L, x, T, H, out, scratch, rt);  // warm-up
      ep.reset_timings();
      for (int r = 0; r < o.reps; ++r)
        wall.push_back(timed_call(comm, *L, x, T, H, out, scratch, rt));
      const auto& t = ep.timings()[0];
      const double n = double(t.calls);
      std::vector<double> mine{t.route_s / n,         t.dispatch_s / n,
                               t.wait_dispatch_s / n, t.compute_s / n,
                               t.combine_s / n,       t.wait_combine_s / n,
                               median(wall),          double(t.rows_received) / n};
      const auto all = comm.gather(mine);
      if (comm.is_root()) {
        fmt::print(
            "1. one MoE layer, {} tokens per rank, uniform routing, dropless, {} ranks x {} "
            "threads "
            "(mean over {} calls, ms)\n{:>5} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            T, D, o.threads, o.reps, "rank", "route", "dispatch", "(wait)", "experts", "combine",
            "(wait)", "layer", "rows in");
        Json ranks = Json::array();
        for (int r = 0; r < D; ++r) {
          const double* v = all.data() + r * 8;
          fmt::print(
              "{:>5} {:>7.2f} {:>9.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.0f}\n", r,
              1e3 * v[0], 1e3 * v[1], 1e3 * v[2], 1e3 * v[3], 1e3 * v[4], 1e3 * v[5], 1e3 * v[6],
              v[7]);
          ranks.push_back({{"rank", r},
                           {"route_s", v[0]},
                           {"dispatch_s", v[1]},
                           {"wait_dispatch_s", v[2]},
                           {"compute_s", v[3]},
                           {"combine_s", v[4]},
                           {"wait_combine_s", v[5]},
                           {"layer_median_s", v[6]},
                           {"rows_received", v[7]}});
        }
        result["breakdown"] = ranks;
      }
    }

    // ---- 2. exchange GB/s vs raw MPI_Alltoallv of the same bytes
    {
      const auto x = make_tokens(popularity("uniform", o.experts), T, H, 2000 + uint64_t(me));
      parallel::ExpertParallelBackend ep(comm, pl, 1);
      ep.set_compute_for_tests(copy_expert, nullptr);  // experts replaced by a copy
      moe::MoeRuntime rt;
      rt.placement = pl;
      rt.source_device = me;
      rt.backend = &ep;
      std::vector<double> ep_times, mpi_times, raw_times;
      timed_call(comm, *L, x, T, H, out, scratch, rt);
      ep.reset_timings();
      for (int r = 0; r < o.reps; ++r) {
        comm.barrier();
        const double before = ep.timings()[0].dispatch_s + ep.timings()[0].combine_s;
        const double before_mpi = ep.timings()[0].comm_s;
        moe::moe_forward(L->block, x.data(), T, H, out.data(), scratch, rt);
        ep_times.push_back(ep.timings()[0].dispatch_s + ep.timings()[0].combine_s - before);
        mpi_times.push_back(ep.timings()[0].comm_s - before_mpi);
      }
      // The same per-peer row counts, raw: this rank's kept pairs per owner, out and back.
      std::vector<int64_t> counts_out(static_cast<size_t>(D), 0);
      for (int32_t e : scratch.ids)
        if (e >= 0) ++counts_out[size_t(pl.device_of(e))];
      std::vector<int64_t> counts_in(static_cast<size_t>(D));
      parallel::check_mpi(MPI_Alltoall(counts_out.data(), 1, MPI_INT64_T, counts_in.data(), 1,
                                       MPI_INT64_T, comm.comm()),
                          "MPI_Alltoall");
      int64_t total_out = 0, total_in = 0;
      for (int d = 0; d < D; ++d)
        total_out += counts_out[size_t(d)], total_in += counts_in[size_t(d)];
      std::vector<float> send(size_t(total_out * H), 1.0f), recv, back;
      for (int r = 0; r < o.reps + 1; ++r) {
        comm.barrier();
        const double t0 = now();
        parallel::RowExchange there, home;
        there.start(comm, send.data(), counts_out, recv, counts_in, H, false);
        home.start(comm, recv.data(), counts_in, back, counts_out, H, false);
        if (r > 0) raw_times.push_back(now() - t0);
      }
      int64_t remote_bytes = 0;
      for (int d = 0; d < D; ++d)
        if (d != me) remote_bytes += (counts_out[size_t(d)] + counts_in[size_t(d)]) * H * 4;
      const double ep_s = median(ep_times), mpi_s = median(mpi_times), raw_s = median(raw_times);
      std::vector<double> mine{ep_s, mpi_s, raw_s, double(remote_bytes)};
      const auto all = comm.gather(mine);
      if (comm.is_root()) {
        fmt::print(
            "\n2. row exchange there and back (experts replaced by a copy), median of {} (ms; GB/s "
            "of "
            "bytes to and from other ranks)\n{:>5} {:>10} {:>8} {:>10} {:>8} {:>10} {:>8} {:>9} "
            "{:>9}\n",
            o.reps, "rank", "all-to-all", "GB/s", "+pack/comb", "GB/s", "raw a2av", "GB/s",
            "a2a/raw", "full/raw");
        Json ranks = Json::array();
        for (int r = 0; r < D; ++r) {
          const double* v = all.data() + r * 4;
          fmt::print(
              "{:>5} {:>10.3f} {:>8.2f} {:>10.3f} {:>8.2f} {:>10.3f} {:>8.2f} {:>8.2f}x "
              "{:>8.2f}x\n",
              r, 1e3 * v[1], v[3] / v[1] / 1e9, 1e3 * v[0], v[3] / v[0] / 1e9, 1e3 * v[2],
              v[3] / v[2] / 1e9, v[1] / v[2], v[0] / v[2]);
          ranks.push_back({{"rank", r},
                           {"alltoall_s", v[1]},
                           {"exchange_with_pack_combine_s", v[0]},
                           {"raw_alltoallv_s", v[2]},
                           {"remote_bytes", v[3]},
                           {"alltoall_over_raw", v[1] / v[2]},
                           {"full_over_raw", v[0] / v[2]}});
        }
        fmt::print(
            "all-to-all = inside MPI: counts MPI_Alltoall + rows MPI_Alltoallv there and back; "
            "+pack/comb adds gathering rows by owner and the weighted combine; raw = two "
            "MPI_Alltoallv of the same per-peer bytes (target: within 1.2x)\n");
        result["exchange"] = ranks;
      }
    }

    // ---- 3. skewed routing: layer time vs the busiest rank's load, with and without drop
    if (comm.is_root())
      fmt::print(
          "\n3. layer time vs the busiest rank's load ({} tokens per rank, median of {}; time = "
          "slowest "
          "rank)\n{:>10} {:>7} {:>6} {:>10} {:>10} {:>10} {:>9} {:>7} {:>10}\n",
          T, o.reps, "skew", "policy", "gamma", "layer ms", "vs none", "busiest", "max/mean", "DT",
          "ms/krow");
    Json skew_rows = Json::array();
    for (const std::string& skew : o.skews) {
      const auto x = make_tokens(popularity(skew, o.experts), T, H, 3000 + uint64_t(me));
      double dropless_ms = 0;
      std::vector<std::pair<std::string, double>> cases{{"none", 0.0}};
      for (double g : o.gammas) cases.push_back({"score", g});
      for (const auto& [policy, gamma] : cases) {
        parallel::ExpertParallelBackend ep(comm, pl, 1);
        moe::LoadStats stats(1, o.experts);
        stats.set_placement(pl);
        moe::MoeRuntime rt;
        rt.capacity.policy = moe::parse_capacity_policy(policy);
        rt.capacity.factor = gamma > 0 ? gamma : 1.0;
        rt.placement = pl;
        rt.source_device = me;
        rt.backend = &ep;
        timed_call(comm, *L, x, T, H, out, scratch, rt);
        rt.stats = &stats;
        std::vector<double> wall;
        for (int r = 0; r < o.reps; ++r)
          wall.push_back(comm.all_reduce_max(timed_call(comm, *L, x, T, H, out, scratch, rt)));
        std::vector<int64_t> c = stats.counters();
        comm.all_reduce_sum(c);
        stats.set_counters(c);
        const double ms = 1e3 * median(wall);
        if (policy == "none") dropless_ms = ms;
        int64_t busiest = 0, total = 0;
        for (int d = 0; d < D; ++d)
          busiest = std::max(busiest, stats.device_count(0, d)), total += stats.device_count(0, d);
        busiest /= o.reps;
        total /= o.reps;
        const double dt = stats.dropped_fraction(0);
        if (comm.is_root()) {
          fmt::print("{:>10} {:>7} {:>6} {:>10.2f} {:>9.2f}x {:>7} {:>10.2f} {:>6.1f}% {:>10.3f}\n",
                     skew, policy, policy == "none" ? "-" : fmt::format("{:g}", gamma), ms,
                     ms / dropless_ms, busiest, stats.device_max_over_mean(0), 100 * dt,
                     ms / (busiest / 1000.0));
          skew_rows.push_back({{"skew", skew},
                               {"policy", policy},
                               {"gamma", gamma},
                               {"layer_median_s", ms / 1e3},
                               {"busiest_rank_rows", busiest},
                               {"rows_total", total},
                               {"rank_max_over_mean", stats.device_max_over_mean(0)},
                               {"expert_max_over_mean", stats.max_over_mean(0)},
                               {"dropped_token_fraction", dt}});
        }
      }
    }
    if (comm.is_root()) {
      fmt::print(
          "busiest = rows the most loaded rank's experts computed per call; ms/krow = layer time "
          "per "
          "1000 of those rows (constant when the busiest rank sets the pace)\n");
      result["skew"] = skew_rows;
      if (!o.json.empty()) {
        std::ofstream(o.json) << result.dump(2) << "\n";
        fmt::print("wrote {}\n", o.json);
      }
    }
  } catch (const std::exception& e) {
    comm.abort(e.what());
  }
  return 0;
}
