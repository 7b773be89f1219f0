// switchyard train: train a MoE language model on a corpus (default: the King James Bible of
// Debian's bible-kjv-text), from scratch or from a checkpoint, with progress lines, a JSON-lines
// log, a loss plot and resumable checkpoints that `switchyard generate` loads as they are.
#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/file_util.h"
#include "model/config.h"
#include "model/tensor_names.h"
#include "ops/threads.h"
#include "parallel/communicator.h"
#include "synth/synthetic_checkpoint.h"
#include "tokenizer/tokenizer.h"
#include "train/allocator.h"
#include "train/checkpoint.h"
#include "train/corpus.h"
#include "train/data_parallel.h"
#include "train/init.h"
#include "train/token_data.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/phase_times.h"

namespace sy::cli {

namespace {

struct TrainArgs {
  std::string out, corpus = "bible-kjv", init, tokenizer_from;
  double val_fraction = 0.05;
  int vocab = 4096;
  synth::SyntheticSpec spec;
  int64_t batch = 8, seq = 256;
  uint64_t seed = 1;
  int threads = 0;
  std::string save_dtype = "F32";
  bool resume = false, auto_resume = false, profile = false;
  std::string pec_select = "sequential";
  std::string parallel = "ep";
  std::string export_corpus;
  bool noisy_gating = false;
  parallel::EpOptions ep;  // overlap, emulated interconnect for the expert exchanges
  train::TrainerConfig trainer;
};

synth::SyntheticSpec default_spec() {
  synth::SyntheticSpec s;
  s.family = model::Family::kMixtral;
  s.hidden_size = 256;
  s.num_layers = 6;
  s.num_heads = 8;
  s.num_kv_heads = 4;
  s.num_experts = 8;
  s.top_k = 2;
  s.expert_ffn = 192;
  s.tie_embeddings = true;
  return s;
}

void run_train(TrainArgs& a) {
  const parallel::Communicator& comm = parallel::Communicator::world();
  const bool root = comm.is_root();
  if (a.parallel != "ep" && a.parallel != "dp")
    fail("--parallel must be ep or dp, got '{}'", a.parallel);
  if (a.pec_select != "sequential" && a.pec_select != "load-aware")
    fail("--pec-select must be sequential or load-aware, got '{}'", a.pec_select);
  train::keep_freed_memory();
  ops::set_num_threads(a.threads);
  if (a.out.empty() && a.export_corpus.empty()) fail("--out is required");
  if (!a.tokenizer_from.empty() && !a.init.empty())
    fail("--tokenizer-from: a model started with --init keeps its own tokenizer");
  if (!a.init.empty() && model::load_config(a.init).router.expand_parts)
    fail(
        "'{}' was partitioned with the partial transformation, whose gate routes whole experts "
        "to all their parts; training needs the source model or a complete partition "
        "(switchyard partition --mode complete)",
        a.init);
  const std::string ckpt = a.out + "/model";
  if (root && a.export_corpus.empty()) {
    make_output_dir(a.out, "--out");
    // A save interrupted between its two renames left the checkpoint as model.old-PID: put it
    // back before deciding whether this is a new run or a resumed one.
    train::recover_checkpoint_dir(ckpt);
  }
  if (root && !a.resume && !a.auto_resume && io::file_exists(ckpt + "/trainer_state.json"))
    fail(
        "{} already holds a training checkpoint: pass --resume to continue it, or choose another "
        "--out",
        a.out);
  if (a.auto_resume) a.resume = io::file_exists(ckpt + "/trainer_state.json");
  if (a.resume && !io::file_exists(ckpt + "/trainer_state.json"))
    fail(
        "--resume: {} holds no training checkpoint (no trainer_state.json); drop --resume to "
        "start a new run there",
        ckpt);
  const auto t0 = std::chrono::steady_clock::now();

  // Data and tokenizer.
  const train::Corpus corpus = train::load_corpus(a.corpus, a.val_fraction);
  if (root) fmt::print("corpus: {}\n", corpus.description);
  if (!a.export_corpus
           .empty()) {  // the split as text files (e.g. to score held-out text), then stop
    if (!root) return;
    make_output_dir(a.export_corpus, "--export-corpus");
    io::write_text_file_atomic(a.export_corpus + "/train.txt", corpus.train_text);
    io::write_text_file_atomic(a.export_corpus + "/validation.txt", corpus.val_text);
    fmt::print("wrote {0}/train.txt and {0}/validation.txt\n", a.export_corpus);
    return;
  }
  std::string tokenizer_json;
  std::string source_dir = a.resume ? ckpt : a.init;
  if (!source_dir.empty()) {
    tokenizer_json = io::read_text_file(source_dir + "/tokenizer.json");
  } else if (!a.tokenizer_from.empty()) {  // e.g. a draft model that must share a target's ids
    tokenizer_json = io::read_text_file(a.tokenizer_from + "/tokenizer.json");
  } else {
    tokenizer_json = train::train_corpus_tokenizer(corpus.train_text, a.vocab);
  }
  const Tokenizer tokenizer = Tokenizer::from_json_string(tokenizer_json, "tokenizer.json");
  const int32_t eos = train::eos_token_id(tokenizer);
  std::vector<int32_t> train_tokens = train::tokenize_corpus(tokenizer, corpus.train_text);
  std::vector<int32_t> val_tokens = train::tokenize_corpus(tokenizer, corpus.val_text);
  if (root)
    fmt::print("tokens: {} train, {} validation (vocabulary {})\n", train_tokens.size(),
               val_tokens.size(), tokenizer.vocab_size());
  const train::BatchSampler sampler(std::move(train_tokens), std::move(val_tokens), a.batch, a.seq,
                                    a.seed);

  // Model: fresh, from --init, or the checkpoint being resumed (its values are loaded by resume()).
  std::string config_json;
  train::ParamSet params;
  if (!source_dir.empty()) {
    if (a.resume) train::verify_checkpoint(source_dir);  // a corrupt shard: refused before use
    config_json = io::read_text_file(source_dir + "/config.json");
    params = train::load_params(source_dir);
  } else {
    synth::SyntheticSpec spec = a.spec;
    spec.vocab_size = tokenizer.vocab_size();
    train::FreshModel fresh = train::fresh_model(spec, eos, a.seed);
    config_json = std::move(fresh.config_json);
    params = std::move(fresh.params);
  }
  const model::ModelConfig config = model::parse_config(
      config_json, source_dir.empty() ? "config.json" : source_dir + "/config.json");
  if (a.noisy_gating)  // W_noise per MoE layer, zero-initialised (noise scale softplus(0))
    for (int64_t l = 0; l < config.num_layers; ++l) {
      const std::string name = model::moe_prefix(config, l) + "gate.noise.weight";
      if (config.layer_is_moe[size_t(l)] && !params.find(name))
        params.add(name, {config.router.num_experts, config.hidden_size});
    }
  if (config.vocab_size < tokenizer.vocab_size())
    fail("the model's vocabulary ({}) is smaller than the tokenizer's ({})", config.vocab_size,
         tokenizer.vocab_size());

  train::TrainerConfig tc = a.trainer;
  tc.run_dir = a.out;
  tc.pec.load_aware = a.pec_select == "load-aware";
  tc.save_dtype =
      a.save_dtype == "BF16" ? DType::BF16
      : a.save_dtype == "F32"
          ? DType::F32
          : (fail("--save-dtype must be F32 or BF16, got '{}'", a.save_dtype), DType::F32);
  int64_t trainable = 0;
  for (const train::Param& p : params.all()) trainable += p.trainable ? p.numel() : 0;
  if (root)
    fmt::print(
        "model: {} {} layers, hidden {}, {} experts top-{}, {:.2f} M parameters; "
        "batch {} x {}, {} steps, lr {} (warm-up {}, cosine to x{}), {} threads\n",
        config.architecture, config.num_layers, config.hidden_size, config.router.num_experts,
        config.router.top_k, double(trainable) / 1e6, a.batch, a.seq, tc.steps, tc.schedule.lr_max,
        tc.schedule.warmup_steps, tc.schedule.min_lr_ratio, ops::num_threads());
  std::unique_ptr<train::ParallelTraining> parallel;
  if (comm.distributed()) {
    parallel = std::make_unique<train::ParallelTraining>(comm, params, config.router.num_experts,
                                                         a.parallel == "ep", a.ep);
    if (root)
      fmt::print(
          "parallel: {} ranks, data parallel for dense weights{}\n", comm.size(),
          parallel->expert_parallel()
              ? fmt::format(", expert parallel for the {} experts (~{} per rank){}{}",
                            config.router.num_experts, config.router.num_experts / comm.size(),
                            a.ep.overlap ? "; exchanges overlapped" : "",
                            a.ep.link.active() ? "; " + a.ep.link.describe() : "")
              : ", experts replicated");
  }
  train::Trainer trainer(tc, config, config_json, tokenizer_json, params, sampler, a.seed,
                         parallel.get());
  PhaseTimes profile;
  if (a.profile) trainer.set_profile(&profile);
  if (a.resume) trainer.resume();
  const int64_t first = trainer.step();
  const double val = trainer.run();
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> exchange_by_rank;  // [comm, exposed, round trips, bytes] per rank
  if (parallel && parallel->expert_compute()) {
    const train::EpTrainTiming& x = parallel->expert_compute()->timing();
    exchange_by_rank =
        comm.gather({x.comm_s, x.exposed_s, double(x.calls), double(x.remote_bytes)});
  }
  if (!root) return;
  if (a.profile) fmt::print("{}", profile.table(int(std::max<int64_t>(1, trainer.step() - first))));
  for (size_t r = 0; r + 3 < exchange_by_rank.size(); r += 4) {
    const double comm_s = exchange_by_rank[r], exposed_s = exchange_by_rank[r + 1];
    fmt::print(
        "expert exchanges, rank {}: {:.0f} round trips, {:.1f} MB to and from other ranks, "
        "{:.2f} s in flight, {:.2f} s exposed ({:.0f}% hidden{})\n",
        r / 4, exchange_by_rank[r + 2], exchange_by_rank[r + 3] / 1e6, comm_s, exposed_s,
        comm_s > 0 ? 100.0 * std::max(0.0, 1.0 - exposed_s / comm_s) : 0.0,
        a.ep.link.active() ? "; EMULATED link" : "");
  }
  fmt::print(
      "done: {} steps in {:.0f} s; validation cross-entropy {:.4f} (perplexity {:.2f})\n"
      "  model:  {}/model   (switchyard generate --model {}/model)\n"
      "  log:    {}/train_log.jsonl\n  plot:   {}/loss.svg\n",
      trainer.step() - first, total, val, std::exp(val), a.out, a.out, a.out, a.out);
}

}  // namespace

void register_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  a->spec = default_spec();
  train::TrainerConfig& t = a->trainer;
  t.steps = 2000;
  t.schedule.lr_max = 3e-3;
  t.schedule.warmup_steps = 100;
  CLI::App* cmd = app.add_subcommand(
      "train", "Train a MoE language model on a corpus (default: the King James Bible)");
  cmd->add_option("-o,--out", a->out,
                  "Run directory: model/ (checkpoint), train_log.jsonl, loss.svg");
  cmd->add_option("--export-corpus", a->export_corpus,
                  "Write the corpus split to DIR/train.txt and DIR/validation.txt and exit");
  cmd->add_flag("--resume", a->resume, "Continue the checkpoint in --out (same data and settings)");
  cmd->add_flag("--auto-resume", a->auto_resume,
                "Continue the checkpoint in --out if there is one, else start (for restart loops: "
                "switchyard supervise)");
  cmd->add_option("--corpus", a->corpus, "bible-kjv, or a UTF-8 text file")->capture_default_str();
  cmd->add_option("--val-fraction", a->val_fraction, "Share of documents held out for validation")
      ->capture_default_str();
  cmd->add_option("--vocab", a->vocab, "Tokenizer vocabulary to train (fresh models)")
      ->capture_default_str();
  cmd->add_option("--tokenizer-from", a->tokenizer_from,
                  "A fresh model uses this model directory's tokenizer.json instead of training "
                  "one (a draft model for speculative decoding must share its target's ids)");
  cmd->add_option(
      "--init", a->init,
      "Start from this checkpoint (its tokenizer and weights) instead of a fresh model");
  auto* m = cmd->add_option_group("model", "Shape of a fresh model");
  add_family_option(*m, a->spec.family, " (dots1: sigmoid router + aux-loss-free bias)");
  m->add_option("--hidden", a->spec.hidden_size, "Hidden size")->capture_default_str();
  m->add_option("--layers", a->spec.num_layers, "Layers")->capture_default_str();
  m->add_option("--heads", a->spec.num_heads, "Attention heads")->capture_default_str();
  m->add_option("--kv-heads", a->spec.num_kv_heads, "Key/value heads")->capture_default_str();
  m->add_option("--experts", a->spec.num_experts, "Routed experts")->capture_default_str();
  auto given = std::make_shared<ScMoeOptions>();
  given->top_k = m->add_option("--top-k", a->spec.top_k, "Experts per token (scmoe: 1)")
                     ->capture_default_str();
  m->add_option("--expert-ffn", a->spec.expert_ffn, "Expert FFN width")->capture_default_str();
  given->shared_ffn =
      m->add_option("--shared-ffn", a->spec.shared_ffn,
                    "Shared expert width (qwen2_moe, dots1; scmoe: the expert width)")
          ->capture_default_str();
  m->add_option("--dense-layers", a->spec.first_dense_layers, "Leading dense layers (dots1)")
      ->capture_default_str();
  m->add_option("--dense-ffn", a->spec.dense_ffn, "Dense-layer FFN width")->capture_default_str();
  m->add_option("--tie-embeddings", a->spec.tie_embeddings,
                "Share the embedding with the LM head (true/false)")
      ->capture_default_str();
  auto* o = cmd->add_option_group("optimisation");
  o->add_option("--steps", t.steps, "Optimizer steps")->capture_default_str();
  o->add_option("--batch", a->batch, "Sequences per step")->capture_default_str();
  o->add_option("--seq", a->seq, "Tokens per sequence")->capture_default_str();
  o->add_option("--lr", t.schedule.lr_max, "Peak learning rate")->capture_default_str();
  o->add_option("--warmup", t.schedule.warmup_steps, "Linear warm-up steps")->capture_default_str();
  o->add_option("--min-lr-ratio", t.schedule.min_lr_ratio, "Cosine decay ends at lr x this")
      ->capture_default_str();
  o->add_option("--weight-decay", t.adamw.weight_decay, "AdamW weight decay (matrices only)")
      ->capture_default_str();
  o->add_option("--beta2", t.adamw.beta2, "AdamW beta2")->capture_default_str();
  o->add_option("--clip", t.clip, "Gradient-norm clipping (0: off)")->capture_default_str();
  o->add_option("--seed", a->seed, "Seed of the initial weights and the batch order")
      ->capture_default_str();
  auto* r = cmd->add_option_group("routing", "Balancing and capacity");
  r->add_option("--aux-coef", t.loss.aux_coef, "Load-balancing loss coefficient (E * sum D_i P_i)")
      ->capture_default_str();
  r->add_option("--z-coef", t.loss.z_coef, "Router z-loss coefficient")->capture_default_str();
  r->add_option("--bias-update-rate", t.bias_update_rate,
                "Aux-loss-free balancing step (models with a selection bias, e.g. --family dots1)")
      ->capture_default_str();
  r->add_flag("--noisy-gating", a->noisy_gating,
              "Noisy top-k gating (Shazeer et al. 2017): learned noise W_noise per MoE layer, "
              "training only");
  r->add_option("--capacity-factor", t.loss.capacity_factor,
                "Score-priority token drop with C = ceil(g*T*k/E) (0: dropless)")
      ->capture_default_str();
  auto* l = cmd->add_option_group("logging");
  l->add_option("--log-every", t.log_every, "Progress line every N steps")->capture_default_str();
  l->add_option("--eval-every", t.eval_every, "Validation every N steps (0: at the end)")
      ->capture_default_str();
  l->add_option("--eval-batches", t.eval_batches, "Validation batches per evaluation")
      ->capture_default_str();
  l->add_option("--save-every", t.save_every, "Checkpoint every N steps (0: at the end)")
      ->capture_default_str();
  l->add_option("--save-dtype", a->save_dtype, "Weights dtype in the checkpoint: F32 or BF16")
      ->capture_default_str();
  l->add_option("--stop-at", t.stop_at,
                "End this session after this step (checkpointed; --resume continues)")
      ->capture_default_str();
  l->add_flag("--profile", a->profile, "Print the time per phase of a step at the end");
  auto* f = cmd->add_option_group("fault tolerance",
                                  "Partial experts checkpointing (MoC-System) and fault injection");
  f->add_option("--pec-k", t.pec.k,
                "Experts saved per MoE layer per checkpoint, besides all non-expert state (0: all)")
      ->capture_default_str();
  f->add_option("--pec-select", a->pec_select,
                "Which experts: sequential (rotating) or load-aware (most unsaved tokens)")
      ->capture_default_str();
  f->add_option("--plt-threshold", t.pec.plt_threshold,
                "Dynamic K: double --pec-k after a recovery that leaves the proportion of lost "
                "tokens above this")
      ->capture_default_str();
  f->add_flag("!--no-dynamic-k", t.pec.dynamic_k, "Keep --pec-k fixed after recoveries");
  f->add_option("--snapshot-k", t.pec.snapshot_k,
                "Two-level checkpointing: experts per MoE layer also copied to node-local memory "
                "each checkpoint (the --pec-k persisted ones among them; 0: off)")
      ->capture_default_str();
  f->add_option("--snapshot-dir", t.snapshot_dir,
                "Node-local memory for --snapshot-k (a tmpfs that outlives the process)")
      ->capture_default_str();
  f->add_flag("--async-checkpoint", t.async_save,
              "Write checkpoints on a background thread while the next step's forward and "
              "backward passes run (the last save of a session stays synchronous)");
  f->add_option("--fail-at-step", t.fail_at_step,
                "Inject a fault: at the end of this step, --fail-rank kills itself (SIGKILL), "
                "once per run")
      ->capture_default_str();
  f->add_option("--fail-rank", t.fail_rank, "The rank that --fail-at-step kills")
      ->capture_default_str();
  f->add_flag("--fail-node-loss", t.fail_node_loss,
              "The killed rank's node is lost too: its node-local snapshot goes with it");
  cmd->add_option("--threads", a->threads, "Threads per process (0 = all cores)")
      ->capture_default_str();
  cmd->add_option("--parallel", a->parallel,
                  "Under mpirun: ep (experts owned by ranks, dense weights data parallel) or dp "
                  "(everything replicated)")
      ->capture_default_str();
  cmd->add_flag("--ep-overlap", a->ep.overlap,
                "Under mpirun with --parallel ep: non-blocking expert exchanges progressed in the "
                "background while other operators compute (ScMoE's window, forward and backward)");
  cmd->add_option("--ep-link-gbps", a->ep.link.gbit_per_s,
                  "Under mpirun with --parallel ep: EMULATE a slower interconnect, every expert "
                  "exchange taking at least latency + bytes / bandwidth (Gbit/s per rank)")
      ->check(CLI::NonNegativeNumber & kFiniteNumber);
  cmd->add_option("--ep-link-latency-us", a->ep.link.latency_us,
                  "EMULATED latency added to every expert exchange (microseconds)")
      ->check(CLI::NonNegativeNumber & kFiniteNumber);
  add_scmoe_options(*m, a->spec);
  cmd->callback([a, given] {
    scmoe_defaults(*given, a->spec);
    run_train(*a);
  });
}

}  // namespace sy::cli
