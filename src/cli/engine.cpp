#include "cli/engine.h"

#include <fmt/format.h>

#include <fstream>
#include <optional>

#include "io/file_util.h"
#include "io/gguf.h"
#include "model/gguf_checkpoint.h"
#include "model/gguf_vocab.h"
#include "ops/threads.h"
#include "util/error.h"

namespace sy::cli {

namespace {

uint64_t fnv1a(uint64_t h, const std::string& s) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// What every rank must agree on: config.json and the tensor inventory (names, shapes, dtypes).
uint64_t model_fingerprint(const std::string& dir, const model::Model& m) {
  uint64_t h = fnv1a(0xcbf29ce484222325ull, model::is_gguf_file(dir)
                                                ? model::gguf_config_json(io::GgufFile(dir))
                                                : io::read_text_file(dir + "/config.json"));
  for (const auto& [name, t] : m.weights().store.all()) {
    h = fnv1a(h, name + ":" + t->dtype_name);
    for (int64_t d : t->shape) h = fnv1a(h, std::to_string(d) + ",");
  }
  return h;
}

int64_t resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

}  // namespace

void add_parallel_options(CLI::App& cmd, ParallelOptions& o) {
  const std::string group = "Expert parallelism (mpirun -np N switchyard ...)";
  cmd.add_flag("--ep-overlap,--ep-nonblocking", o.ep.overlap,
               "Overlap the all-to-alls with computation: non-blocking exchanges driven by a "
               "progress thread while other operators run (a shared expert; for ScMoE models "
               "everything after the shortcut's source). Off: each exchange blocks")
      ->group(group);
  cmd.add_option("--ep-link-gbps", o.ep.link.gbit_per_s,
                 "EMULATE a slower interconnect: every exchange takes at least latency + "
                 "bytes / bandwidth (Gbit/s per rank, the larger of bytes sent and received "
                 "remotely); reports say so. 0: real MPI timing")
      ->check(CLI::NonNegativeNumber & kFiniteNumber)
      ->group(group);
  cmd.add_option("--ep-link-latency-us", o.ep.link.latency_us,
                 "EMULATED latency added to every exchange (microseconds)")
      ->check(CLI::NonNegativeNumber & kFiniteNumber)
      ->group(group);
  cmd.add_option("--ep-expert-slot", o.expert_slot,
                 "Run the routed experts before this operator of the overlap window (0 = right "
                 "after the dispatch starts); default: adaptive, from measured times")
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  cmd.add_option("--ep-json", o.ep_json, "Write each rank's per-layer timings as JSON")
      ->group(group);
  add_precision_options(cmd, o.precision);
}

std::optional<Tokenizer> load_tokenizer(const std::string& model_path) {
  if (model::is_gguf_file(model_path)) {
    const io::GgufFile f(model_path);
    if (const std::optional<std::string> json = model::gguf_tokenizer_json(f))
      return Tokenizer::from_json_string(*json, model_path);
    return std::nullopt;
  }
  const std::string tok = model_path + "/tokenizer.json";
  if (!io::file_exists(tok)) return std::nullopt;
  return Tokenizer::from_file(tok);
}

std::unique_ptr<Engine> open_engine(const ModelOptions& mo, const CapacityOptions& co,
                                    const ParallelOptions& po, bool need_tokenizer) {
  auto eng = std::make_unique<Engine>();
  eng->comm = &parallel::Communicator::world();
  const parallel::Communicator& comm = *eng->comm;
  ops::set_num_threads(mo.threads);
  const model::ModelConfig cfg = model::load_config(mo.model_dir);
  const int E = cfg.router.num_experts;

  model::ExpertMask owned;
  if (comm.distributed()) {
    if (E <= 0) fail("this model has no MoE layers: nothing to spread over {} ranks", comm.size());
    if (co.placement_file.empty() && comm.size() > E)
      fail(
          "mpirun started {} ranks but the model has only {} experts; every rank needs at least "
          "one expert of its own: use at most {} ranks",
          comm.size(), E, E);
    if (co.devices > 0 && co.devices != comm.size())
      fail(
          "--devices {} does not match the {} ranks mpirun started (under mpirun the ranks are "
          "the devices; leave --devices out)",
          co.devices, comm.size());
    CapacityOptions ranks = co;
    if (ranks.placement_file.empty()) ranks.devices = comm.size();
    eng->runtime = make_moe_runtime(ranks, E, /*expert_parallel=*/true);
    if (eng->runtime.placement.num_devices() != comm.size())
      fail("placement file '{}' lists {} devices but mpirun started {} ranks", co.placement_file,
           eng->runtime.placement.num_devices(), comm.size());
    eng->runtime.source_device = comm.rank();
    owned.assign(size_t(E), false);
    for (int32_t e : eng->runtime.placement.hosted_on(comm.rank())) owned[size_t(e)] = true;
  } else {
    eng->runtime = make_moe_runtime(co, E);
  }

  std::optional<moe::OffloadConfig> offload;
  if (mo.expert_cache_mb > 0) {
    if (comm.distributed())
      fail(
          "--expert-cache-mb offloads experts in one process; under mpirun each rank holds only "
          "its own experts already (leave it out, or run one process)");
    offload =
        moe::OffloadConfig{size_t(mo.expert_cache_mb * 1e6), mo.offload_gbps, !mo.no_stream_ahead};
  } else if (mo.offload_gbps > 0 || mo.no_stream_ahead) {
    fail("--offload-gbps and --no-stream-ahead apply to offloaded experts: add --expert-cache-mb");
  }
  // ReaLB: checked before the weights load (a refusal should not wait for them).
  eng->runtime.precision = precision_policy(
      po.precision,
      comm.distributed()
          ? comm.size()
          : (eng->runtime.placement.empty() ? 1 : eng->runtime.placement.num_devices()),
      offload.has_value());
  if (eng->runtime.placement.replicated() &&
      eng->runtime.precision.mode == moe::PrecisionMode::kReaLB)
    fail(
        "--precision-policy realb weighs each rank's load by the experts it owns, but placement "
        "file '{}' replicates experts: compare them in separate runs (or use low-all)",
        co.placement_file);
  if (!po.precision.modality_ids.empty())
    eng->runtime.modality = moe::parse_modality_rule(po.precision.modality_ids);
  if (eng->runtime.precision.format == moe::LowFormat::kQ4 && eng->runtime.precision.active() &&
      (cfg.hidden_size % 32 != 0 || cfg.expert_intermediate_size % 32 != 0))
    fail(
        "--low-precision q4 stores rows in 32-value blocks, but this model's experts are {} x {}; "
        "use int8 or nvfp4",
        cfg.expert_intermediate_size, cfg.hidden_size);
  eng->model = std::make_unique<model::Model>(
      model::Model::load(mo.model_dir, owned, offload ? &*offload : nullptr));
  try {
    eng->tokenizer = load_tokenizer(mo.model_dir);
  } catch (const Error&) {
    if (need_tokenizer) throw;  // token ids given: the vocabulary is not needed
  }
  if (!eng->tokenizer && need_tokenizer)
    fail("'{}' has no {} (pass token ids with --ids instead of text)", mo.model_dir,
         model::is_gguf_file(mo.model_dir) ? "tokenizer" : "tokenizer.json");

  if (comm.distributed()) {
    const std::vector<uint64_t> prints =
        comm.all_gather(model_fingerprint(mo.model_dir, *eng->model));
    for (int r = 1; r < comm.size(); ++r)
      if (prints[size_t(r)] != prints[0])
        fail(
            "ranks disagree on the model: rank {}'s config.json or tensors differ from rank 0's "
            "(fingerprints {:016x} vs {:016x}; this rank loaded '{}'); every rank needs the same "
            "checkpoint",
            r, prints[size_t(r)], prints[0], mo.model_dir);
    const parallel::Communicator* world = &comm;
    eng->runtime.sum_counts = [world](std::vector<int64_t>& v) { world->all_reduce_sum(v); };
    parallel::EpOptions ep = po.ep;
    ep.precision = eng->runtime.precision;
    eng->ep = std::make_unique<parallel::ExpertParallelBackend>(comm, eng->runtime.placement,
                                                                int(cfg.num_layers), ep);
    eng->runtime.backend = eng->ep.get();
  } else if (po.ep.overlap || po.ep.link.active()) {
    if (comm.is_root())
      fmt::print(stderr,
                 "note: --ep-overlap / --ep-link-* apply to expert parallelism (mpirun -np N); "
                 "this process runs every expert itself\n");
  }
  eng->runtime.expert_slot = po.expert_slot;
  const moe::CapacityConfig& cap = eng->runtime.capacity;
  if (cap.policy == moe::CapacityPolicy::kThreshold && cap.drop_major < cap.drop_minor &&
      !cfg.partition_reconstructed)
    fail(
        "2T-Drop (--drop-threshold {},{}) runs an expert's major part alone, but '{}' has no "
        "major parts: make them with `switchyard profile-neurons` and `switchyard partition "
        "--factor 2 --importance FILE`",
        cap.drop_major, cap.drop_minor, mo.model_dir);
  eng->stats = eng->model->new_load_stats();
  eng->stats.set_placement(eng->runtime.placement);
  eng->runtime.stats = &eng->stats;
  if (!comm.distributed()) eng->runtime.precision_log = &eng->precision_log;
  if (comm.is_root() && eng->runtime.precision.active())
    fmt::print(stderr, "precision policy: {}\n", eng->runtime.precision.describe());
  if (comm.is_root() && (eng->runtime.capacity.active() || !eng->runtime.placement.empty()))
    fmt::print(
        stderr, "{}capacity policy: {}; placement: {}\n",
        comm.distributed() ? fmt::format("expert parallel over {} ranks; ", comm.size()) : "",
        eng->runtime.capacity.describe(), eng->runtime.placement.describe());
  return eng;
}

void reduce_load_stats(const Engine& eng, moe::LoadStats& stats) {
  if (!eng.distributed()) return;
  std::vector<int64_t> c = stats.counters();
  eng.comm->all_reduce_sum(c);
  stats.set_counters(c);
  stats.clear_call_straggler();
}

void report_expert_parallel(const Engine& eng, const std::string& json_path) {
  if (!eng.distributed()) return;
  const parallel::Communicator& comm = *eng.comm;
  const auto& timings = eng.ep->timings();
  // Per layer: dispatch, wait_dispatch, compute, combine, wait_combine, rows in, bytes remote,
  // route, comm, expert slot, slots; then expert MB held and resident MB.
  constexpr int kFields = 11;
  std::vector<double> mine;
  for (const auto& t : timings)
    mine.insert(mine.end(), {t.dispatch_s, t.wait_dispatch_s, t.compute_s, t.combine_s,
                             t.wait_combine_s, double(t.rows_received), double(t.bytes_sent_remote),
                             t.route_s, t.comm_s, double(t.slot), double(t.slots)});
  mine.push_back(double(eng.model->weights().expert_bytes_held) / 1e6);
  mine.push_back(double(resident_kib()) / 1024.0);
  const std::vector<double> all = comm.gather(mine);
  if (!comm.is_root()) return;
  const size_t per_rank = mine.size(), L = timings.size();
  auto at = [&](int r, size_t l, int f) {
    return all[size_t(r) * per_rank + l * kFields + size_t(f)];
  };
  const parallel::EpOptions& ep = eng.ep->options();
  const std::string mode =
      ep.overlap ? (eng.ep->progress_thread_running() ? "overlap: non-blocking, progress thread"
                                                      : "overlap: non-blocking, tested between "
                                                        "operators")
                 : "blocking exchanges";
  std::string out = fmt::format(
      "\nExpert parallelism over {} ranks ({}; {}; {}): time per rank in MoE layers, ms\n"
      "{:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9} {:>8} "
      "{:>9}\n",
      comm.size(), eng.runtime.placement.describe(), mode, ep.link.describe(), "rank", "route",
      "dispatch", "(wait)", "experts", "combine", "(wait)", "straggler", "rows in", "MB sent",
      "comm", "exposed", "hidden", "experts");
  nlohmann::json ranks = nlohmann::json::array();
  for (int r = 0; r < comm.size(); ++r) {
    double f[kFields] = {0};
    double straggler = 0;
    nlohmann::json layers = nlohmann::json::array();
    for (size_t l = 0; l < L; ++l) {
      double slowest = 0;
      for (int q = 0; q < comm.size(); ++q) slowest = std::max(slowest, at(q, l, 2));
      straggler += slowest - at(r, l, 2);  // idle while the slowest owner computed
      for (int i = 0; i < 9; ++i) f[i] += at(r, l, i);
      if (at(r, l, 5) > 0 || at(r, l, 2) > 0 || at(r, l, 8) > 0) {
        const double exposed = at(r, l, 1) + at(r, l, 4), comm_s = at(r, l, 8);
        layers.push_back(
            {{"layer", l},
             {"route_s", at(r, l, 7)},
             {"dispatch_s", at(r, l, 0)},
             {"wait_dispatch_s", at(r, l, 1)},
             {"compute_s", at(r, l, 2)},
             {"combine_s", at(r, l, 3)},
             {"wait_combine_s", at(r, l, 4)},
             {"comm_s", comm_s},
             {"exposed_s", exposed},
             {"overlap_fraction", comm_s > 0 ? std::max(0.0, 1.0 - exposed / comm_s) : 0.0},
             {"expert_slot", at(r, l, 9)},
             {"window_operators", at(r, l, 10)},
             {"rows_received", at(r, l, 5)},
             {"bytes_sent_remote", at(r, l, 6)},
             {"straggler_wait_s", slowest - at(r, l, 2)}});
      }
    }
    const double held = all[size_t(r) * per_rank + L * kFields],
                 rss = all[size_t(r) * per_rank + L * kFields + 1];
    const double exposed = f[1] + f[4];
    out += fmt::format(
        "{:>5} {:>8.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>11.2f} {:>11.2f} {:>10.0f} "
        "{:>10.2f} {:>9.2f} {:>9.2f} {:>7.0f}% {:>6.1f} MB  (resident {:.0f} MB)\n",
        r, 1e3 * f[7], 1e3 * f[0], 1e3 * f[1], 1e3 * f[2], 1e3 * f[3], 1e3 * f[4], 1e3 * straggler,
        f[5], f[6] / 1e6, 1e3 * f[8], 1e3 * exposed,
        f[8] > 0 ? 100.0 * std::max(0.0, 1.0 - exposed / f[8]) : 0.0, held, rss);
    ranks.push_back(
        {{"rank", r}, {"expert_mb_held", held}, {"resident_mb", rss}, {"layers", layers}});
  }
  // Per layer, over ranks: where the communication went.
  out += fmt::format(
      "\nPer MoE layer, mean over ranks (ms per forward call):\n{:>6} {:>8} {:>9} "
      "{:>9} {:>9} {:>8}\n",
      "layer", "slot", "comm", "hidden", "exposed", "hidden");
  for (size_t l = 0; l < L; ++l) {
    double comm_s = 0, exposed = 0, calls = 0;
    for (int r = 0; r < comm.size(); ++r)
      comm_s += at(r, l, 8), exposed += at(r, l, 1) + at(r, l, 4);
    calls = double(std::max<int64_t>(1, timings[l].calls));
    if (comm_s == 0 && at(0, l, 2) == 0 && at(0, l, 5) == 0) continue;
    comm_s /= comm.size() * calls, exposed /= comm.size() * calls;
    out += fmt::format("{:>6} {:>4.0f} of {:<1.0f} {:>9.3f} {:>9.3f} {:>9.3f} {:>7.0f}%\n", l,
                       at(0, l, 9), at(0, l, 10), 1e3 * comm_s, 1e3 * (comm_s - exposed),
                       1e3 * exposed,
                       comm_s > 0 ? 100.0 * std::max(0.0, 1.0 - exposed / comm_s) : 0.0);
  }
  out +=
      "(wait): blocked in the dispatch (counts + rows there) / in the return all-to-all; "
      "straggler: sum over layers of (slowest rank's expert time - this rank's); comm: the "
      "exchanges from start to completion; exposed: blocked waiting for them; hidden = comm - "
      "exposed (behind other operators); slot K of n: the experts ran before operator K of the "
      "n computed while the layer's exchanges were in flight (rank 0)\n";
  fmt::print(stderr, "{}", out);
  if (!json_path.empty())
    io::write_text_file_atomic(
        json_path,
        nlohmann::json({{"link", ep.link.describe()}, {"overlap", ep.overlap}, {"ranks", ranks}})
                .dump(2) +
            "\n");
}

}  // namespace sy::cli
