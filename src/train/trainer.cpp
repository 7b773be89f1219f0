#include "train/trainer.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/core.h>

#include "io/file_util.h"
#include "report/svg_line_plot.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "util/error.h"
#include "util/json_bounded.h"

namespace sy::train {

namespace {

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

}  // namespace

nlohmann::json run_identity(const TrainerConfig& c, const BatchSampler& sampler, uint64_t seed) {
  return {{"seed", seed},
          {"batch", sampler.batch_size()},
          {"seq", sampler.seq_len()},
          {"train_tokens", sampler.train_tokens().size()},
          {"val_tokens", sampler.val_tokens().size()},
          {"steps", c.steps},
          {"lr", c.schedule.lr_max},
          {"warmup", c.schedule.warmup_steps},
          {"min_lr_ratio", c.schedule.min_lr_ratio},
          {"capacity_factor", c.loss.capacity_factor},
          {"aux_coef", c.loss.aux_coef},
          {"z_coef", c.loss.z_coef}};
}

ResumePoint resume_point(const nlohmann::json& state, const nlohmann::json& identity,
                         const std::string& dir) {
  const std::string where = fmt::format("'{}/trainer_state.json'", dir);
  if (!state.is_object()) fail("{} must hold a JSON object", where);
  if (!state.contains("identity") || !state["identity"].is_object())
    fail("{} has no object 'identity' (the settings of the run that wrote it)", where);
  const nlohmann::json& have = state["identity"];
  for (const auto& [key, value] : identity.items()) {
    if (key == "steps") continue;  // a run may be extended
    if (!have.contains(key) || have[key] != value)
      fail(
          "cannot resume {}: it was trained with {} = {}, this run has {} (use the same "
          "settings, or a new --out)",
          dir, key, have.contains(key) ? excerpt(have[key]) : "?", excerpt(value));
  }
  ResumePoint p;
  if (!state.contains("step") || !state["step"].is_number_unsigned())
    fail("{}: 'step' is missing or not a step count", where);
  const uint64_t step = state["step"].get<uint64_t>();
  if (step > uint64_t(1) << 53) fail("{}: 'step' {} is implausible", where, step);
  p.step = int64_t(step);
  if (state.contains("elapsed_s")) {
    if (!state["elapsed_s"].is_number() || !(state["elapsed_s"].get<double>() >= 0))
      fail("{}: 'elapsed_s' must be a non-negative number of seconds", where);
    p.elapsed_s = state["elapsed_s"].get<double>();
  }
  return p;
}

Trainer::Trainer(TrainerConfig config, model::ModelConfig model_config, std::string config_json,
                 std::string tokenizer_json, ParamSet& params, const BatchSampler& sampler,
                 uint64_t seed, ParallelTraining* parallel)
    : config_(std::move(config)),
      model_config_(std::move(model_config)),
      config_json_(std::move(config_json)),
      tokenizer_json_(std::move(tokenizer_json)),
      params_(params),
      sampler_(sampler),
      seed_(seed),
      model_(model_config_, params),
      optimizer_(config_.adamw),
      parallel_(parallel),
      root_(!parallel || parallel->root()) {
  if (parallel_) {
    if (sampler_.batch_size() < parallel_->size())
      fail("--batch {} is smaller than the {} ranks: every rank needs at least one row",
           sampler_.batch_size(), parallel_->size());
    parallel_->attach(model_);
  }
  config_.schedule.total_steps = config_.steps;
  validate(config_.schedule);
  if (config_.steps < 1) fail("--steps must be at least 1");
  if (model_config_.vocab_size < int64_t(1)) fail("the model has no vocabulary");
  const int ranks = parallel_ ? parallel_->size() : 1;
  if (config_.fail_at_step < 0)
    fail("--fail-at-step must be positive, got {}", config_.fail_at_step);
  if (config_.fail_rank < 0 || config_.fail_rank >= ranks)
    fail("--fail-rank {} is not a rank of this run (0 to {})", config_.fail_rank, ranks - 1);
  const double slots = double(config_.steps) * double(sampler_.batch_size()) *
                       double(sampler_.seq_len()) * double(model_config_.router.top_k);
  ParallelTraining* par = parallel_;
  pec_ = std::make_unique<ExpertCheckpointing>(
      config_.pec, model_config_, params_, parallel_ ? parallel_->rank() : 0, ranks,
      [par](int e) { return par ? par->expert_owner(e) : 0; }, slots);
  if (config_.pec.snapshot_k > 0) {
    if (parallel_ && !parallel_->expert_parallel())
      fail("--snapshot-k needs --parallel ep (each expert's state on one rank)");
    snapshot_ = std::make_unique<ExpertSnapshot>(config_.snapshot_dir, config_.run_dir, rank());
  }
}

int Trainer::rank() const {
  return parallel_ ? parallel_->rank() : 0;
}

Trainer::~Trainer() {
  if (pending_ && pending_->thread.joinable()) pending_->thread.join();
}

void Trainer::resume() {
  const std::string dir = config_.run_dir + "/model";
  const nlohmann::json state = load_checkpoint(dir, params_, optimizer_);
  const ResumePoint point = resume_point(state, run_identity(config_, sampler_, seed_), dir);
  if (point.step > config_.steps)
    fail("cannot resume {}: it is at step {}, past this run's --steps {}", dir, point.step,
         config_.steps);
  step_ = point.step;
  elapsed_s_ = point.elapsed_s;
  pec_->restore_state(state.contains("pec") ? state["pec"] : nlohmann::json());
  // Two-level recovery: experts this rank owns whose node-local snapshot is the one the
  // checkpoint recorded, and fresher than their storage copy, come from node memory.
  const size_t L = pec_->moe_layers().size();
  std::vector<int64_t> restored(L * size_t(pec_->num_experts()), 0);
  if (snapshot_)
    for (size_t j = 0; j < L; ++j)
      for (int e = 0; e < pec_->num_experts(); ++e) {
        const int64_t t = pec_->snapshot_step(j, e);
        if (pec_->owner(e) != rank() || t <= pec_->saved_step(j, e) || t > step_ ||
            snapshot_->step_of(pec_->stem(j, e)) != t)
          continue;
        snapshot_->load(pec_->stem(j, e), pec_->expert_params(j, e), params_, optimizer_);
        restored[j * size_t(pec_->num_experts()) + size_t(e)] = 1;
      }
  if (parallel_) parallel_->sum(restored);
  std::vector<std::vector<bool>> from_snapshot(L);
  int64_t from_memory = 0;
  for (size_t j = 0; j < L; ++j)
    for (int e = 0; e < pec_->num_experts(); ++e) {
      from_snapshot[j].push_back(restored[j * size_t(pec_->num_experts()) + size_t(e)] > 0);
      from_memory += from_snapshot[j].back();
    }
  const Recovery rec = pec_->recover(from_snapshot);
  if (!config_.quiet && root_ && from_memory > 0)
    fmt::print("recovery: {} experts restored from node-local snapshots (fresher than storage)\n",
               from_memory);
  if (!config_.quiet && root_ && rec.plt_added > 0) {
    int64_t lost = 0;
    for (int64_t l : rec.lost_slots) lost += l;
    fmt::print(
        "recovery: experts restored from older checkpoints lost {} token-slots "
        "(PLT +{:.3f}%, {:.3f}% in all){}\n",
        lost, 100 * rec.plt_added, 100 * rec.plt_total,
        rec.k_after != rec.k_before
            ? fmt::format("; PLT above {:.2f}%: --pec-k {} -> {}", 100 * config_.pec.plt_threshold,
                          rec.k_before, rec.k_after)
            : "");
  }
  // Keep the log up to the checkpoint's step, so the resumed run continues it exactly.
  const std::string log_path = config_.run_dir + "/train_log.jsonl";
  std::string kept;
  if (io::file_exists(log_path)) {
    std::istringstream in(io::read_text_file(log_path));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      // Lines this program did not write (edited, cut short) are dropped, never fatal.
      const auto j = nlohmann::json::parse(line, nullptr, false);
      auto number = [&](const char* key) {
        return j.is_object() && j.contains(key) && j[key].is_number();
      };
      if (!number("step") || j["step"].get<double>() > double(step_)) continue;
      kept += line + "\n";
      if (number("ce")) {
        plot_steps_.push_back(j["step"].get<double>());
        plot_train_.push_back(j["ce"].get<double>());
      }
      if (number("val_ce")) {
        plot_val_steps_.push_back(j["step"].get<double>());
        plot_val_.push_back(j["val_ce"].get<double>());
      }
    }
  }
  io::write_text_file_atomic(log_path, kept);
  if (!config_.quiet && root_)
    fmt::print("resuming {} at step {} of {}\n", dir, step_, config_.steps);
}

void Trainer::log_line(const nlohmann::json& entry) {
  if (!root_) return;
  std::ofstream f(config_.run_dir + "/train_log.jsonl", std::ios::app);
  f << entry.dump() << "\n";
  if (!f) fail("cannot append to {}/train_log.jsonl", config_.run_dir);
}

void Trainer::write_plot() const {
  if (!root_) return;
  report::LinePlot plot;
  plot.title = "Switchyard training: cross-entropy (nats / token)";
  plot.series.push_back({"train", plot_steps_, plot_train_, "", false});
  if (!plot_val_.empty())
    plot.series.push_back({"validation", plot_val_steps_, plot_val_, "", false});
  plot.footer = fmt::format("{} layers, {} experts, top-{}, batch {} x {}",
                            model_config_.num_layers, model_config_.router.num_experts,
                            model_config_.router.top_k, sampler_.batch_size(), sampler_.seq_len());
  report::write_line_plot_svg(config_.run_dir + "/loss.svg", plot);
}

double Trainer::evaluate() {
  const int64_t n = std::min(config_.eval_batches, sampler_.num_val_batches());
  if (n <= 0) return std::numeric_limits<double>::quiet_NaN();
  const int64_t S = sampler_.seq_len();
  const RowRange rows =
      parallel_ ? parallel_->rows(sampler_.batch_size()) : RowRange{0, sampler_.batch_size()};
  std::vector<int32_t> in(size_t(rows.count * S)), tg(size_t(rows.count * S));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    sampler_.val_rows(i, rows.first, rows.count, in.data(), tg.data());
    LossParts l = model_.evaluate(in.data(), tg.data(), rows.count, S, config_.loss);
    if (parallel_) parallel_->sum_loss(l);
    sum += l.ce;
  }
  return sum / double(n);
}

// A checkpoint: the collective set-up now; the writing (storage shards and node snapshots) now,
// or, with --async-checkpoint, on a thread that overlaps the next step's forward and backward
// passes (which read the values but do not change them); the commit before that step's update.
void Trainer::save(bool full) {
  finish_save();  // one save in flight at a time
  auto p = std::make_unique<PendingSave>();
  p->t0 = std::chrono::steady_clock::now();
  p->step = step_;
  p->full = full;
  model_.sync_tied_head();
  CheckpointContents c;
  // config.json states the dtype the weights are stored in.
  nlohmann::json cfg = nlohmann::json::parse(config_json_);
  cfg["torch_dtype"] = config_.save_dtype == DType::BF16 ? "bfloat16" : "float32";
  c.config_json = cfg.dump(2);
  c.tokenizer_json = tokenizer_json_;
  c.weights_dtype = config_.save_dtype;
  p->selection = pec_->select(full);
  if (snapshot_ && !full) p->snapshot = pec_->select_snapshot(p->selection);
  c.trainer_state = {{"step", step_},
                     {"elapsed_s", elapsed_s_},
                     {"identity", run_identity(config_, sampler_, seed_)},
                     {"pec", pec_->state_after(p->selection, p->snapshot, step_)}};
  p->save = std::make_unique<CheckpointSave>(config_.run_dir + "/model", std::move(c),
                                             pec_->groups(p->selection), params_,
                                             parallel_ ? parallel_->save_comm() : SaveComm{});
  PendingSave* raw = p.get();
  auto work = [this, raw] {
    const auto w0 = std::chrono::steady_clock::now();
    raw->save->write(params_, optimizer_);
    try {
      for (size_t j = 0; j < raw->snapshot.size(); ++j)
        for (int e : raw->snapshot[j])
          if (pec_->owner(e) == rank())
            snapshot_->write(pec_->stem(j, e), pec_->expert_params(j, e), params_, optimizer_,
                             raw->step);
    } catch (const std::exception& e) {
      raw->snapshot_error = e.what();
    }
    raw->write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
  };
  p->launch_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - p->t0).count();
  p->async = config_.async_save && !full;
  pending_ = std::move(p);
  if (pending_->async) {
    pending_->thread = std::thread(work);
  } else {
    work();
    finish_save();
  }
}

void Trainer::finish_save() {
  if (!pending_) return;
  std::unique_ptr<PendingSave> p = std::move(pending_);
  const auto t_wait = std::chrono::steady_clock::now();
  if (p->thread.joinable()) p->thread.join();
  if (!p->snapshot_error.empty())
    fail("cannot write the node-local snapshot in {}: {}", snapshot_->dir(), p->snapshot_error);
  const SaveStats stats = p->save->commit(params_, optimizer_.step_count());
  pec_->committed(p->selection, p->snapshot, p->step);
  const auto t1 = std::chrono::steady_clock::now();
  // Time training waited: the set-up, and the wait and commit here (all of it when synchronous).
  const double blocking = p->async
                              ? p->launch_s + std::chrono::duration<double>(t1 - t_wait).count()
                              : std::chrono::duration<double>(t1 - p->t0).count();
  save_seconds_.push_back(blocking);
  save_bytes_.push_back(stats.total_bytes);
  int64_t experts = 0, snapshots = 0;
  for (const auto& layer : p->selection) experts += int64_t(layer.size());
  for (const auto& layer : p->snapshot) snapshots += int64_t(layer.size());
  log_line({{"step", p->step},
            {"checkpoint",
             {{"seconds", blocking},
              {"write_seconds", p->write_s},
              {"bytes", stats.total_bytes},
              {"rank_bytes", stats.rank_bytes},
              {"experts_saved", experts},
              {"experts_snapshot", snapshots},
              {"k", pec_->k()},
              {"full", p->full},
              {"async", p->async}}}});
}

void Trainer::inject_fault(int64_t step) const {
  if (config_.fail_at_step != step || (parallel_ ? parallel_->rank() : 0) != config_.fail_rank)
    return;
  const std::string marker =
      fmt::format("{}/faults/step-{}-rank-{}", config_.run_dir, step, config_.fail_rank);
  if (io::file_exists(marker)) return;  // happened already; this is the restarted run
  std::filesystem::create_directories(config_.run_dir + "/faults");
  io::write_text_file_atomic(marker, "SIGKILL\n");
  if (config_.fail_node_loss && snapshot_) snapshot_->remove_all();  // the node's memory is gone
  fmt::print(stderr, "switchyard: injected fault: rank {} kills itself at step {}\n",
             config_.fail_rank, step);
  std::fflush(nullptr);
  ::kill(::getpid(), SIGKILL);
}

void Trainer::print_checkpoint_summary() const {
  if (config_.quiet || !root_ || save_seconds_.empty()) return;
  std::vector<double> s = save_seconds_;
  std::sort(s.begin(), s.end());
  std::vector<int64_t> b = save_bytes_;
  std::sort(b.begin(), b.end());
  fmt::print(
      "checkpoints: {} saves, median {:.1f} ms blocking and {:.2f} MB each (K = {} of {} experts "
      "per layer), PLT {:.3f}%\n",
      s.size(), 1e3 * s[s.size() / 2], double(b[b.size() / 2]) / 1e6, pec_->k(),
      pec_->num_experts(), 100 * pec_->plt());
}

double Trainer::load_imbalance() const {
  double sum = 0;
  int n = 0;
  for (int l = 0; l < int(model_config_.num_layers); ++l) {
    const auto& counts = model_.layer_activations(l).moe_act.counts;
    if (counts.empty()) continue;
    int64_t total = 0, mx = 0;
    for (int64_t c : counts) total += c, mx = std::max(mx, c);
    if (total == 0) continue;
    sum += double(mx) * double(counts.size()) / double(total);
    ++n;
  }
  return n ? sum / n : 1.0;
}

double Trainer::dropped_fraction() const {
  int64_t dropped = 0, routed = 0;
  for (int l = 0; l < int(model_config_.num_layers); ++l) {
    const MoeActivations& a = model_.layer_activations(l).moe_act;
    if (a.counts.empty()) continue;
    dropped += a.dropped;
    for (int64_t c : a.counts) routed += c;
  }
  return routed ? double(dropped) / double(routed) : 0.0;
}

// Aux-loss-free balancing (DeepSeek-V3): each expert's selection bias moves by a fixed step
// toward balance -- up when it got fewer pairs than the mean, down when more.
void Trainer::update_selection_biases() {
  if (config_.bias_update_rate == 0 || !model_config_.router.has_selection_bias) return;
  for (int l = 0; l < int(model_config_.num_layers); ++l) {
    const auto& counts = model_.layer_activations(l).moe_act.counts;
    if (counts.empty()) continue;
    Param* bias = model_.layer_params(l).moe.selection_bias;
    if (!bias) continue;
    double mean = 0;
    for (int64_t c : counts) mean += double(c);
    mean /= double(counts.size());
    for (size_t e = 0; e < counts.size(); ++e) {
      const double diff = mean - double(counts[e]);
      bias->value[e] += config_.bias_update_rate * float((diff > 0) - (diff < 0));
    }
  }
}

double Trainer::run() {
  std::filesystem::create_directories(config_.run_dir);
  // A new run starts a new log (an attempt killed before its first checkpoint may have left one).
  if (step_ == 0 && root_) io::write_text_file_atomic(config_.run_dir + "/train_log.jsonl", "");
  const int64_t B = sampler_.batch_size(), S = sampler_.seq_len();
  const RowRange rows = parallel_ ? parallel_->rows(B) : RowRange{0, B};
  std::vector<int32_t> in(size_t(rows.count * S)), tg(size_t(rows.count * S));
  const int64_t first = step_;
  const auto t_start = std::chrono::steady_clock::now();
  const double elapsed_before = elapsed_s_;
  double val = std::numeric_limits<double>::quiet_NaN();
  double tokens_window = 0, time_window = 0;
  const int64_t end =
      config_.stop_at > 0 ? std::min(config_.stop_at, config_.steps) : config_.steps;
  while (step_ < end) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t s = step_ + 1;
    sampler_.train_rows(s, rows.first, rows.count, in.data(), tg.data());
    params_.zero_grads();
    LossOptions lo = config_.loss;
    lo.noise_step = s;  // noisy gating (if the model has it) draws per step
    lo.noise_seed = seed_;
    LossParts loss = model_.forward_backward(in.data(), tg.data(), rows.count, S, lo);
    finish_save();  // an asynchronous save of the last step: done before the values change
    PhaseTimer pt(profile_, "clip + AdamW");
    if (parallel_) {
      parallel_->sum_loss(loss);
      parallel_->reduce_gradients(params_);
    }
    if (!std::isfinite(loss.total))
      fail("the loss is {} at step {} (diverged): lower --lr or raise --warmup", loss.total, s);
    const double norm = parallel_ ? parallel_->clip_grad_norm(params_, config_.clip)
                                  : clip_grad_norm(params_, config_.clip);
    const double lr = lr_at(config_.schedule, s);
    optimizer_.step(params_, lr);
    update_selection_biases();
    pt.stop();
    step_ = s;
    for (int l : pec_->moe_layers()) pec_->count(l, model_.layer_activations(l).moe_act.counts);
    inject_fault(s);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tokens_window += double(B * S);
    time_window += dt;
    elapsed_s_ = elapsed_before +
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

    const bool last = s == end;
    const bool do_eval = last || (config_.eval_every > 0 && s % config_.eval_every == 0);
    const bool do_log =
        last || do_eval || s % std::max<int64_t>(1, config_.log_every) == 0 || s == 1;
    // Checkpoints follow --save-every alone, whether or not the step is logged.
    const bool do_save = last || (config_.save_every > 0 && s % config_.save_every == 0);
    if (!do_log) {
      if (do_save) save(last);
      continue;
    }
    const double imbalance = load_imbalance();  // this step's routing (before validation runs)
    nlohmann::json entry{{"step", s},
                         {"lr", lr},
                         {"loss", loss.total},
                         {"ce", loss.ce},
                         {"aux", loss.aux},
                         {"z", loss.z},
                         {"grad_norm", norm},
                         {"tokens_per_s", tokens_window / time_window},
                         {"elapsed_s", elapsed_s_},
                         {"load_max_over_mean", imbalance},
                         {"dropped_fraction", dropped_fraction()}};
    const double tps = tokens_window / time_window;
    tokens_window = time_window = 0;
    plot_steps_.push_back(double(s));
    plot_train_.push_back(loss.ce);
    std::string val_text;
    if (do_eval) {
      val = evaluate();
      if (std::isfinite(val)) {
        entry["val_ce"] = val;
        entry["val_ppl"] = std::exp(val);
        plot_val_steps_.push_back(double(s));
        plot_val_.push_back(val);
        val_text = fmt::format(" | val {:.3f} (ppl {:.1f})", val, std::exp(val));
      }
    }
    log_line(entry);
    if (!config_.quiet && root_) {
      const double per_step = (elapsed_s_ - elapsed_before) / double(s - first);
      fmt::print(
          "step {:>6}/{} | loss {:.3f} (ce {:.3f}){} | lr {:.2e} | {:.0f} tok/s | "
          "load max/mean {:.2f} | ETA {}\n",
          s, config_.steps, loss.total, loss.ce, val_text, lr, tps, imbalance,
          duration(per_step * double(config_.steps - s)));
      std::fflush(stdout);
    }
    if (do_eval) write_plot();
    if (do_save) save(last);  // the last save of a session holds every expert
  }
  finish_save();
  if (snapshot_ && step_ >= config_.steps) snapshot_->remove_all();  // the run is complete
  print_checkpoint_summary();
  if (step_ == first) {  // nothing left to train: report the checkpoint's validation loss
    val = evaluate();
  }
  return val;
}

}  // namespace sy::train
