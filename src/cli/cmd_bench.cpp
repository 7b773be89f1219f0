// switchyard bench: prefill and decode throughput of a model, in one process or expert-parallel
// under mpirun (each rank runs its own batch of sequences; tokens/s are summed over ranks),
// followed by the expert-load table and, under MPI, each rank's MoE time breakdown.
#include <fmt/core.h>

#include <unistd.h>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/engine.h"
#include "cli/run_report.h"
#include "io/file_util.h"
#include "util/error.h"
#include "util/phase_times.h"

namespace sy::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  CapacityOptions capacity;
  ParallelOptions parallel;
  ReportOptions report;
  int prompt = 128, decode = 32, batch = 1, reps = 3;
  std::string json;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void run_bench(const BenchOptions& o) {
  std::unique_ptr<Engine> eng = open_engine(o.model, o.capacity, o.parallel, false);
  const model::Model& m = *eng->model;
  const model::ModelConfig& cfg = m.config();
  const parallel::Communicator& comm = *eng->comm;
  RunReport report(o.report, eng->runtime, eng->distributed() ? eng->rank() : -1);
  std::mt19937 rng(uint32_t(1234 + comm.rank()));
  std::uniform_int_distribution<int32_t> tok(0, int32_t(cfg.vocab_size - 1));
  std::vector<std::vector<int32_t>> prompts(size_t(o.batch));
  for (auto& p : prompts)
    for (int i = 0; i < o.prompt; ++i) p.push_back(tok(rng));

  model::Workspace ws;
  std::vector<float> logits(size_t(o.batch) * size_t(cfg.vocab_size));
  std::vector<double> prefill_s, decode_s;
  PhaseTimes prefill_phases;                 // this rank's time per phase of the timed prefills
  for (int rep = 0; rep <= o.reps; ++rep) {  // rep 0 warms up
    std::vector<model::KvCache> caches;
    for (int b = 0; b < o.batch; ++b) caches.emplace_back(cfg, o.prompt + o.decode);
    std::vector<model::SequenceChunk> chunks;
    for (int b = 0; b < o.batch; ++b) chunks.push_back({&caches[size_t(b)], prompts[size_t(b)]});
    comm.barrier();
    ws.times = rep > 0 ? &prefill_phases : nullptr;
    auto t0 = std::chrono::steady_clock::now();
    m.forward(chunks, model::LogitsFor::kLastToken, logits.data(), ws, eng->runtime);
    const double p = comm.all_reduce_max(seconds_since(t0));
    ws.times = nullptr;
    std::vector<int32_t> next(size_t(o.batch));
    comm.barrier();
    t0 = std::chrono::steady_clock::now();
    for (int step = 0; step < o.decode; ++step) {
      for (int b = 0; b < o.batch; ++b) {
        next[size_t(b)] = tok(rng);
        chunks[size_t(b)].tokens = {&next[size_t(b)], 1};
      }
      m.forward(chunks, model::LogitsFor::kLastToken, logits.data(), ws, eng->runtime);
    }
    const double d = comm.all_reduce_max(seconds_since(t0));
    if (rep == 0) {
      eng->stats = m.new_load_stats();
      eng->stats.set_placement(eng->runtime.placement);
      if (eng->ep) eng->ep->reset_timings();
      continue;
    }
    prefill_s.push_back(p);
    decode_s.push_back(d);
    if (eng->is_root() && isatty(2)) fmt::print(stderr, "\r\033[K  repetition {}/{}", rep, o.reps);
  }
  if (eng->is_root() && isatty(2)) fmt::print(stderr, "\r\033[K");
  reduce_load_stats(*eng, eng->stats);
  // Per prefill: where the layers' time went, averaged over ranks.
  std::vector<double> phase_s;
  const char* kPhases[] = {"attention fwd", "moe fwd", "dense ffn fwd"};
  for (const char* ph : kPhases) phase_s.push_back(prefill_phases.seconds(ph) / o.reps);
  comm.all_reduce_sum(phase_s);
  for (double& v : phase_s) v /= comm.size();
  if (eng->is_root()) {
    const double seqs = double(o.batch) * comm.size();
    const double p = median(prefill_s), d = median(decode_s);
    if (!o.json.empty()) {
      nlohmann::json j = {{"architecture", cfg.architecture},
                          {"ranks", comm.size()},
                          {"batch_per_rank", o.batch},
                          {"prompt", o.prompt},
                          {"decode_steps", o.decode},
                          {"reps", o.reps},
                          {"prefill_s", p},
                          {"prefill_tokens_per_s", seqs * o.prompt / p},
                          {"decode_s", d},
                          {"decode_tokens_per_s", o.decode > 0 ? seqs * o.decode / d : 0.0},
                          {"repacked_bytes", m.weights().repacked_bytes}};
      for (size_t i = 0; i < phase_s.size(); ++i) j["prefill_phase_s"][kPhases[i]] = phase_s[i];
      if (eng->ep) {
        j["ep_link"] = eng->ep->options().link.describe();
        j["ep_overlap"] = eng->ep->options().overlap;
      }
      io::write_text_file_atomic(o.json, j.dump(2) + "\n");
    }
    fmt::print("{}: {} rank(s) x {} sequence(s), prompt {} tokens, {} decode steps, median of {}\n",
               cfg.architecture, comm.size(), o.batch, o.prompt, o.decode, o.reps);
    fmt::print("prefill {:>9.1f} tokens/s  ({:.3f} s per batch)\n", seqs * o.prompt / p, p);
    if (o.decode > 0)
      fmt::print("decode  {:>9.1f} tokens/s  ({:.2f} ms per step)\n", seqs * o.decode / d,
                 1e3 * d / o.decode);
    if (m.weights().repacked_bytes > 0)
      fmt::print(
          "weights repacked for the BF16 / int8 kernels: {:.1f} MiB beside the file (SY_REPACK=0: "
          "none)\n",
          double(m.weights().repacked_bytes) / (1 << 20));
  }
  report.finish(eng->stats, m, eng->runtime);
  report_expert_parallel(*eng, o.parallel.ep_json);
  report_precision(*eng, o.parallel.precision);
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Prefill and decode tokens/s of a model (expert-parallel under mpirun) on random tokens");
  add_model_options(*cmd, o->model);
  cmd->add_option("--prompt", o->prompt, "Prompt tokens per sequence")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--decode", o->decode, "Decode steps")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch", o->batch, "Sequences per rank")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--reps", o->reps, "Timed repetitions (median reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--json", o->json,
                  "Write the medians and the prefill's time per phase (attention, MoE, dense FFN; "
                  "mean over ranks) as JSON");
  add_capacity_options(*cmd, o->capacity);
  add_parallel_options(*cmd, o->parallel);
  add_report_options(*cmd, o->report);
  cmd->callback([o] {
    check_report_paths(o->report);
    io::check_output_path(o->json, "--json");
    io::check_output_path(o->parallel.ep_json, "--ep-json");
    run_bench(*o);
  });
}

}  // namespace sy::cli
