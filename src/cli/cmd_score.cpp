// switchyard score: per-token log-probabilities and perplexity of a text under the model,
// optionally dumping the float32 logits [tokens, vocab] as .npy. Long texts are cut into
// windows scored as a batch of sequences (the paper's t = batch x sequence tokens per forward),
// and --sweep compares capacity policies and factors on the same text in one command.
#include <fmt/core.h>

#include <unistd.h>
#include <chrono>
#include <cmath>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/engine.h"
#include "cli/run_report.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "util/error.h"
#include "util/memory.h"

namespace sy::cli {
namespace {

struct ScoreOptions {
  ModelOptions model;
  CapacityOptions capacity;
  std::string text, file, ids;
  int window = 0;  // tokens per sequence; 0 = the whole text is one sequence
  int batch = 8;   // sequences per forward call
  int64_t max_tokens = 0;
  std::vector<std::string> sweep_policies;
  std::vector<double> sweep_factors;
  std::string dump_logits, json_path;
  ParallelOptions parallel;
  ReportOptions report;
  bool quiet = false;
};

// log softmax(logits)[target], computed stably in double.
double log_prob(const float* logits, int64_t V, int32_t target) {
  double max = logits[0];
  for (int64_t i = 1; i < V; ++i) max = std::max(max, double(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - max);
  return double(logits[target]) - max - std::log(sum);
}

struct ScoreResult {
  std::vector<double> log_probs;  // per token; NaN for the first token of each window
  double nll = 0;
  int64_t scored = 0;
  std::vector<float> logits;  // [tokens, vocab], only when kept
  double perplexity() const { return scored > 0 ? std::exp(nll / double(scored)) : NAN; }
};

// Scores `ids` cut into windows, `batch` windows per forward call, under `runtime`. Under
// expert parallelism batch i goes to rank i % ranks; every rank runs the same number of
// forward calls (some with no tokens) because the MoE layers' all-to-alls are collective.
ScoreResult score_tokens(const Engine& eng, const std::vector<int32_t>& ids, int64_t window,
                         int batch, const moe::MoeRuntime& runtime, bool keep_logits) {
  const model::Model& m = *eng.model;
  const model::ModelConfig& cfg = m.config();
  const int64_t T = int64_t(ids.size()), V = cfg.vocab_size;
  const int64_t num_windows = (T + window - 1) / window;
  const int64_t num_batches = (num_windows + batch - 1) / batch;
  const int ranks = eng.comm->size(), rank = eng.comm->rank();
  const int64_t steps = (num_batches + ranks - 1) / ranks;
  ScoreResult r;
  std::vector<double> lp(size_t(T), 0.0), scored_mask(size_t(T), 0.0);
  if (keep_logits) {
    require_memory(uint64_t(T) * uint64_t(V) * 4,
                   fmt::format("--dump-logits ({} tokens x {} vocabulary, float32)", T, V));
    r.logits.assign(size_t(T * V), 0.0f);
  }
  const int64_t batch_tokens = std::min<int64_t>(T, int64_t(batch) * window);
  require_memory(uint64_t(batch_tokens) * uint64_t(V) * 4,
                 fmt::format("the logits of one forward call ({} tokens x {} vocabulary; lower "
                             "--batch or --window)",
                             batch_tokens, V));
  model::Workspace ws;
  std::vector<model::KvCache> caches;
  for (int i = 0; i < std::min<int64_t>(batch, num_windows); ++i) caches.emplace_back(cfg, window);
  std::vector<float> logits;
  const bool show_progress = steps > 1 && eng.is_root() && isatty(2);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t b = step * ranks + rank;
    const int64_t first = b * batch;
    const int64_t count = b < num_batches ? std::min<int64_t>(batch, num_windows - first) : 0;
    std::vector<model::SequenceChunk> chunks;
    int64_t tokens = 0;
    for (int64_t w = 0; w < count; ++w) {
      const int64_t begin = (first + w) * window, end = std::min(T, begin + window);
      caches[size_t(w)].clear();
      chunks.push_back({&caches[size_t(w)], {ids.data() + begin, size_t(end - begin)}});
      tokens += end - begin;
    }
    logits.resize(size_t(tokens * V));
    m.forward(chunks, model::LogitsFor::kAllTokens, logits.data(), ws, runtime);
    // Token t of a window is predicted by the logits of position t - 1 of the same window.
    int64_t row = 0;
    for (int64_t w = 0; w < count; ++w) {
      const int64_t begin = (first + w) * window, n = int64_t(chunks[size_t(w)].tokens.size());
      for (int64_t t = 1; t < n; ++t) {
        lp[size_t(begin + t)] =
            log_prob(logits.data() + (row + t - 1) * V, V, ids[size_t(begin + t)]);
        scored_mask[size_t(begin + t)] = 1;
      }
      if (keep_logits)
        std::copy(logits.begin() + row * V, logits.begin() + (row + n) * V,
                  r.logits.begin() + begin * V);
      row += n;
    }
    if (show_progress) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const int64_t done = std::min(T, (step + 1) * ranks * batch * window);
      fmt::print(stderr, "\r\033[K  scored about {}/{} tokens, {:.0f} tokens/s", done, T,
                 double(done) / s);
    }
  }
  if (show_progress) fmt::print(stderr, "\r\033[K");
  eng.comm->all_reduce_sum(lp);
  eng.comm->all_reduce_sum(scored_mask);
  if (keep_logits && eng.distributed()) {
    std::vector<double> all(r.logits.begin(), r.logits.end());
    eng.comm->all_reduce_sum(all);
    std::copy(all.begin(), all.end(), r.logits.begin());
  }
  r.log_probs.assign(size_t(T), NAN);
  for (int64_t t = 0; t < T; ++t) {
    if (scored_mask[size_t(t)] == 0) continue;
    r.log_probs[size_t(t)] = lp[size_t(t)];
    r.nll -= lp[size_t(t)];
    ++r.scored;
  }
  return r;
}

// One line per (policy, factor): perplexity, its change against dropless, DT, pairs dropped /
// added, and the busiest expert and device loads (the straggler the policy is meant to cut).
void run_sweep(const ScoreOptions& o, Engine& eng, const std::vector<int32_t>& ids,
               int64_t window) {
  const int E = eng.model->config().router.num_experts;
  const bool root = eng.is_root();
  std::vector<double> factors = o.sweep_factors;
  if (factors.empty()) factors = {o.capacity.capacity.factor};
  if (root)
    fmt::print("{:>9} {:>6} {:>11} {:>8} {:>7} {:>9} {:>7} {:>10} {:>10} {:>9} {:>8}\n", "policy",
               "gamma", "perplexity", "vs none", "DT", "dropped", "added", "max/mean", "dev m/m",
               "call m/m", "model x");
  double baseline = NAN;
  nlohmann::json rows = nlohmann::json::array();
  for (const std::string& policy : o.sweep_policies) {
    const bool dropless = moe::parse_capacity_policy(policy) == moe::CapacityPolicy::kNone;
    for (double gamma : dropless ? std::vector<double>{factors.front()} : factors) {
      moe::MoeRuntime rt = eng.runtime;  // placement, source device and EP backend as opened
      rt.capacity.policy = moe::parse_capacity_policy(policy);
      rt.capacity.factor = gamma;
      moe::LoadStats stats = eng.model->new_load_stats();
      stats.set_placement(rt.placement);
      rt.stats = &stats;
      const ScoreResult r = score_tokens(eng, ids, window, o.batch, rt, false);
      reduce_load_stats(eng, stats);
      if (!root) continue;
      if (dropless) baseline = r.perplexity();
      const moe::CapacityOutcome t = stats.totals();
      double worst = 0, worst_dev = 0;
      for (int l = 0; l < stats.num_layers(); ++l)
        if (stats.layer_active(l))
          worst = std::max(worst, stats.max_over_mean(l)),
          worst_dev = std::max(worst_dev, stats.device_max_over_mean(l));
      const double dt = t.routed ? double(t.overflow) / double(t.routed) : 0.0;
      const double dropped = t.routed ? double(t.dropped) / double(t.routed) : 0.0;
      const moe::LoadStats::CallStraggler calls = stats.call_straggler_total();
      const bool modelled = calls.calls > 0;  // not under mpirun (rank-local slices)
      fmt::print(
          "{:>9} {:>6} {:>11.4f} {:>7.2f}% {:>6.2f}% {:>8.2f}% {:>7} {:>10.2f} {:>10.2f} {:>9} "
          "{:>8}\n",
          policy, dropless ? "-" : fmt::format("{:g}", gamma), r.perplexity(),
          std::isnan(baseline) ? 0.0 : 100.0 * (r.perplexity() / baseline - 1), 100 * dt,
          100 * dropped, t.added, worst, worst_dev,
          modelled ? fmt::format("{:.2f}", calls.max_over_mean_after(E)) : "-",
          modelled ? fmt::format("{:.2f}x", calls.modelled_speedup(stats.has_devices())) : "-");
      std::fflush(stdout);
      rows.push_back({{"policy", policy},
                      {"capacity_factor", gamma},
                      {"perplexity", r.perplexity()},
                      {"dropped_token_fraction", dt},
                      {"pairs_dropped_fraction", dropped},
                      {"pairs_added", t.added},
                      {"worst_layer_max_over_mean", worst},
                      {"worst_layer_device_max_over_mean", worst_dev},
                      {"straggler", stats.straggler_json()},
                      {"expert_load", stats.to_json()}});
    }
  }
  if (!root) return;
  fmt::print(
      "DT = sum_i ReLU(N_i - C) / sum_i N_i at the row's gamma; max/mean: busiest expert "
      "of the worst layer after the policy (loads summed over calls); dev m/m: busiest device "
      "({}); call m/m: sum over calls of the busiest expert / of the mean; model x: modelled EP "
      "speedup over dropless, sum over calls of the busiest {}'s pairs before / after the policy "
      "(a model, not a measurement)\n",
      eng.runtime.placement.describe(),
      eng.runtime.placement.num_devices() > 1 ? "device" : "expert");
  if (!o.json_path.empty())
    io::write_text_file_atomic(o.json_path, nlohmann::json({{"model", o.model.model_dir},
                                                            {"tokens", ids.size()},
                                                            {"window", window},
                                                            {"batch", o.batch},
                                                            {"sweep", rows}})
                                                    .dump(2) +
                                                "\n");
}

void run_score(const ScoreOptions& o) {
  std::unique_ptr<Engine> eng = open_engine(o.model, o.capacity, o.parallel, o.ids.empty());
  const model::ModelConfig& cfg = eng->model->config();
  std::vector<int32_t> ids;
  if (!o.ids.empty())
    ids = parse_ids(o.ids);
  else
    ids = eng->tokenizer->encode(o.file.empty() ? o.text : io::read_text_file(o.file));
  for (int32_t id : ids)
    if (id < 0 || id >= cfg.vocab_size)
      fail("token id {} is outside the model's vocabulary (0..{})", id, cfg.vocab_size - 1);
  if (o.max_tokens > 0 && int64_t(ids.size()) > o.max_tokens) ids.resize(size_t(o.max_tokens));
  if (ids.empty()) fail("nothing to score: the text encodes to zero tokens");
  const int64_t T = int64_t(ids.size());
  // Windows never exceed the text (buffers follow the text, not the flag) nor the model's
  // context; --window 0 cuts a long text at max_position_embeddings.
  const int64_t window =
      o.window > 0 ? std::min<int64_t>(o.window, T) : std::min(T, cfg.max_position_embeddings);
  if (!o.sweep_policies.empty()) {
    run_sweep(o, *eng, ids, window);
    report_expert_parallel(*eng, o.parallel.ep_json);
    report_precision(*eng, o.parallel.precision);
    return;
  }

  RunReport report(o.report, eng->runtime, eng->distributed() ? eng->rank() : -1);
  const ScoreResult r =
      score_tokens(*eng, ids, window, o.batch, eng->runtime, !o.dump_logits.empty());
  reduce_load_stats(*eng, eng->stats);
  const moe::LoadStats& stats = eng->stats;
  const moe::MoeRuntime& runtime = eng->runtime;
  if (eng->is_root()) {
    nlohmann::json per_token = nlohmann::json::array();
    if (!o.quiet) fmt::print("{:>6} {:>8} {:>12}  {}\n", "pos", "id", "log-prob", "token");
    for (int64_t t = 0; t < T; ++t) {
      const double lp = r.log_probs[size_t(t)];
      if (std::isnan(lp)) continue;  // first token of a window: nothing predicts it
      if (!o.quiet) {
        const std::string piece = eng->tokenizer ? eng->tokenizer->decode({ids[size_t(t)]}) : "";
        fmt::print("{:>6} {:>8} {:>12.4f}  {:?}\n", t, ids[size_t(t)], lp, piece);
      }
      per_token.push_back({{"pos", t}, {"id", ids[size_t(t)]}, {"log_prob", lp}});
    }
    const moe::CapacityOutcome totals = stats.totals();
    const double dt = totals.routed ? double(totals.overflow) / double(totals.routed) : 0.0;
    const double dropped = totals.routed ? double(totals.dropped) / double(totals.routed) : 0.0;
    fmt::print(
        "tokens {}  scored {}  mean NLL {:.4f}  perplexity {:.4f}  capacity {} (gamma {:g})  "
        "DT {:.2f}%  pairs dropped {:.2f}%  added {}\n",
        T, r.scored, r.scored > 0 ? r.nll / double(r.scored) : NAN, r.perplexity(),
        capacity_policy_name(runtime.capacity.policy), runtime.capacity.factor, 100.0 * dt,
        100.0 * dropped, totals.added);
    if (!o.dump_logits.empty())
      io::write_npy_f32(o.dump_logits, r.logits.data(), {T, cfg.vocab_size});
    if (!o.json_path.empty()) {
      nlohmann::json j = {{"model", o.model.model_dir},
                          {"tokens", T},
                          {"window", window},
                          {"ranks", eng->comm->size()},
                          {"ids", ids},
                          {"perplexity", r.perplexity()},
                          {"nll", r.nll},
                          {"per_token", per_token},
                          {"capacity_policy", runtime.capacity.describe()},
                          {"dropped_token_fraction", dt},
                          {"expert_load", stats.to_json()}};
      io::write_text_file_atomic(o.json_path, j.dump(2) + "\n");
    }
  }
  report.finish(stats, *eng->model, runtime);
  report_expert_parallel(*eng, o.parallel.ep_json);
  report_precision(*eng, o.parallel.precision);
}

}  // namespace

void register_score(CLI::App& app) {
  auto o = std::make_shared<ScoreOptions>();
  CLI::App* cmd =
      app.add_subcommand("score", "Per-token log-probabilities and perplexity of a text");
  add_model_options(*cmd, o->model);
  auto* text = cmd->add_option("--text", o->text, "Text to score");
  auto* file = cmd->add_option("-f,--file", o->file, "File whose text to score");
  auto* ids =
      cmd->add_option("--ids", o->ids, "Comma-separated token ids to score instead of text");
  text->excludes(file)->excludes(ids);
  file->excludes(ids);
  cmd->add_option("--window", o->window,
                  "Cut the text into sequences of this many tokens (0 = the model's context, "
                  "max_position_embeddings)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch", o->batch,
                  "Sequences per forward call (capacity counts their tokens together)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-tokens", o->max_tokens, "Score only the first N tokens (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_capacity_options(*cmd, o->capacity);
  cmd->add_option("--sweep", o->sweep_policies,
                  "Compare capacity policies on the same text, e.g. --sweep none,score,expanded "
                  "(one table row per policy and --sweep-factors value)")
      ->delimiter(',');
  cmd->add_option("--sweep-factors", o->sweep_factors, "Capacity factors for --sweep, e.g. 1,1.5,2")
      ->delimiter(',');
  cmd->add_option("--dump-logits", o->dump_logits,
                  "Write float32 logits [tokens, vocab] to this .npy file");
  cmd->add_option("--json", o->json_path,
                  "Write per-token log-probs and perplexity (or the sweep) as JSON");
  add_report_options(*cmd, o->report);
  add_parallel_options(*cmd, o->parallel);
  cmd->add_flag("-q,--quiet", o->quiet, "Print only the summary line");
  cmd->callback([o] {
    if (o->text.empty() && o->file.empty() && o->ids.empty())
      fail("give the text to score with --text, --file or --ids");
    for (const std::string& p : o->sweep_policies) moe::parse_capacity_policy(p);
    for (double g : o->sweep_factors)
      if (!(g > 0) || !std::isfinite(g))
        fail("--sweep-factors must be positive finite numbers (got {})", g);
    if (!o->sweep_factors.empty() && o->sweep_policies.empty())
      fail("--sweep-factors needs --sweep POLICY,... as well");
    if (!o->sweep_policies.empty() && !o->dump_logits.empty())
      fail("--dump-logits cannot be combined with --sweep");
    io::check_output_path(o->dump_logits, "--dump-logits");
    io::check_output_path(o->json_path, "--json");
    check_report_paths(o->report);
    io::check_output_path(o->parallel.ep_json, "--ep-json");
    if (!o->sweep_policies.empty() && !(o->report.trace.empty() && o->report.load_heatmap.empty()))
      fail("--trace and --load-heatmap record one run; they cannot be combined with --sweep");
    run_score(*o);
  });
}

}  // namespace sy::cli
