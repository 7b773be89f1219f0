// The training loop: batches from the sampler, forward + backward, gradient clipping, AdamW on
// the warm-up + cosine schedule, aux-loss-free bias updates, periodic validation, a JSON-lines
// log, a loss plot and atomic checkpoints that resume to the same loss curve.
//
// A run directory holds:
//   model/            the checkpoint (train/checkpoint.h): a Hugging Face model dir that
//                     `switchyard generate` loads, sharded by rank and expert, with the AdamW
//                     moments and the manifest trainer_state.json
//   faults/           markers of injected faults (--fail-at-step), so a restart skips them
//   train_log.jsonl   one JSON object per logged step (and per validation and checkpoint)
//   loss.svg          train / validation loss against the step
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/expert_checkpointing.h"
#include "train/expert_snapshot.h"
#include "train/lr_schedule.h"
#include "train/params.h"
#include "train/token_data.h"
#include "train/train_model.h"
#include "util/dtype.h"
#include "util/phase_times.h"

namespace sy::train {

struct TrainerConfig {
  std::string run_dir;
  int64_t steps = 1000;
  LrSchedule schedule;  // total_steps is set from `steps`
  AdamWConfig adamw;
  double clip = 1.0;  // global gradient-norm limit (0: off)
  LossOptions loss;
  float bias_update_rate = 1e-3f;  // aux-loss-free balancing: b_i += rate * sign(mean - load_i)
  int64_t log_every = 10;
  int64_t eval_every = 100;  // 0: only at the end
  int64_t eval_batches = 8;  // validation batches per evaluation (<= available)
  int64_t save_every = 500;  // 0: only at the end
  DType save_dtype = DType::F32;
  int64_t stop_at = 0;  // > 0: end this session after that step (checkpointed), as an
                        // interruption would; --resume continues the same schedule
  PecConfig pec;        // partial experts checkpointing (k = 0: every expert, every time)
  // Fault injection: at the end of step fail_at_step (> 0), rank fail_rank kills itself with
  // SIGKILL (no cleanup), once per run: a marker in run_dir/faults/ keeps a restarted run from
  // repeating it.
  int64_t fail_at_step = 0;
  int fail_rank = 0;
  bool fail_node_loss = false;  // the failing rank's node snapshot is lost with it
  bool async_save = false;      // write checkpoints while the next step computes (MoC-Async)
  std::string snapshot_dir = "/dev/shm";  // node-local memory for pec.snapshot_k
  bool quiet = false;                     // no progress lines
};

// Settings that must not change across a resume (the data order and model depend on them).
nlohmann::json run_identity(const TrainerConfig& config, const BatchSampler& sampler,
                            uint64_t seed);

// Where a checkpoint's trainer_state.json lets this run resume. sy::Error when the state is
// malformed or was written by a run with other settings than `identity` (run_identity).
struct ResumePoint {
  int64_t step = 0;
  double elapsed_s = 0;
};
ResumePoint resume_point(const nlohmann::json& state, const nlohmann::json& identity,
                         const std::string& dir);

class ParallelTraining;

class Trainer {
 public:
  // The model's config.json / tokenizer.json texts go into every checkpoint.
  // parallel: the other ranks under mpirun (null: this process alone).
  Trainer(TrainerConfig config, model::ModelConfig model_config, std::string config_json,
          std::string tokenizer_json, ParamSet& params, const BatchSampler& sampler, uint64_t seed,
          ParallelTraining* parallel = nullptr);

  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Continues from run_dir/model (sy::Error when it was made with other data/model settings).
  void resume();
  // Trains up to config.steps; returns the final validation cross-entropy (NaN without data).
  double run();

  int64_t step() const { return step_; }
  void set_profile(PhaseTimes* profile) {
    profile_ = profile;
    model_.set_profile(profile);
  }

 private:
  double evaluate();
  struct PendingSave {
    std::unique_ptr<CheckpointSave> save;
    std::thread thread;
    int64_t step = 0;
    bool full = false;
    std::vector<std::vector<int>> selection, snapshot;
    std::chrono::steady_clock::time_point t0;
    double launch_s = 0, write_s = 0;
    bool async = false;
    std::string snapshot_error;
  };
  void save(bool full);
  void finish_save();
  int rank() const;
  void inject_fault(int64_t step) const;
  void print_checkpoint_summary() const;
  void log_line(const nlohmann::json& entry);
  void write_plot() const;
  void update_selection_biases();
  double load_imbalance() const;  // max / mean expert load, averaged over MoE layers
  double dropped_fraction() const;

  TrainerConfig config_;
  model::ModelConfig model_config_;
  std::string config_json_, tokenizer_json_;
  ParamSet& params_;
  const BatchSampler& sampler_;
  uint64_t seed_;
  TrainModel model_;
  AdamW optimizer_;
  int64_t step_ = 0;
  double elapsed_s_ = 0;  // training time of all sessions of this run
  std::vector<double> plot_steps_, plot_train_, plot_val_steps_, plot_val_;
  PhaseTimes* profile_ = nullptr;
  ParallelTraining* parallel_ = nullptr;
  std::unique_ptr<ExpertCheckpointing> pec_;
  std::unique_ptr<ExpertSnapshot> snapshot_;
  std::unique_ptr<PendingSave> pending_;
  std::vector<double> save_seconds_;  // time each save of this session blocked training
  std::vector<int64_t> save_bytes_;   // bytes each save wrote (all ranks)
  bool root_ = true;                  // prints, logs and writes files
};

}  // namespace sy::train
