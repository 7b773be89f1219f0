// switchyard score: per-token log-probabilities and perplexity of a text under the model,
// optionally dumping the float32 logits [tokens, vocab] as .npy.
#include <fmt/core.h>

#include <cmath>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "util/error.h"

namespace sy::cli {
namespace {

struct ScoreOptions {
  ModelOptions model;
  CapacityOptions capacity;
  std::string text, file, ids;
  std::string dump_logits, json_path, load_json;
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

void run_score(const ScoreOptions& o) {
  LoadedModel lm = load_model(o.model, o.ids.empty());
  const model::ModelConfig& cfg = lm.model.config();
  std::vector<int32_t> ids;
  if (!o.ids.empty()) ids = parse_ids(o.ids);
  else ids = lm.tokenizer->encode(o.file.empty() ? o.text : io::read_text_file(o.file));
  if (ids.empty()) fail("nothing to score: the text encodes to zero tokens");

  const int64_t T = int64_t(ids.size()), V = cfg.vocab_size;
  model::KvCache cache(cfg, T);
  model::Workspace ws;
  moe::LoadStats stats = lm.model.new_load_stats();
  moe::MoeRuntime runtime = make_moe_runtime(o.capacity, cfg.router.num_experts);
  runtime.stats = &stats;
  stats.set_placement(runtime.placement);
  if (runtime.capacity.active() || !runtime.placement.empty())
    fmt::print(stderr, "capacity policy: {}; placement: {}\n", runtime.capacity.describe(),
               runtime.placement.describe());
  std::vector<float> logits(size_t(T * V));
  model::SequenceChunk chunk{&cache, ids};
  lm.model.forward({&chunk, 1}, model::LogitsFor::kAllTokens, logits.data(), ws, runtime);

  // Token t is predicted by the logits of position t - 1.
  nlohmann::json per_token = nlohmann::json::array();
  double nll = 0;
  if (!o.quiet) fmt::print("{:>6} {:>8} {:>12}  {}\n", "pos", "id", "log-prob", "token");
  for (int64_t t = 1; t < T; ++t) {
    const double lp = log_prob(logits.data() + (t - 1) * V, V, ids[size_t(t)]);
    nll -= lp;
    std::string piece = lm.tokenizer ? lm.tokenizer->decode({ids[size_t(t)]}) : "";
    if (!o.quiet) fmt::print("{:>6} {:>8} {:>12.4f}  {:?}\n", t, ids[size_t(t)], lp, piece);
    per_token.push_back({{"pos", t}, {"id", ids[size_t(t)]}, {"log_prob", lp}});
  }
  const int64_t scored = T - 1;
  const double ppl = scored > 0 ? std::exp(nll / double(scored)) : NAN;
  const moe::CapacityOutcome moe_totals = stats.totals();
  const double dt = moe_totals.routed ? double(moe_totals.overflow) / double(moe_totals.routed) : 0.0;
  const double dropped = moe_totals.routed ? double(moe_totals.dropped) / double(moe_totals.routed) : 0.0;
  fmt::print("tokens {}  scored {}  mean NLL {:.4f}  perplexity {:.4f}  capacity {}  DT {:.2f}%  "
             "pairs dropped {:.2f}%  added {}\n",
             T, scored, scored > 0 ? nll / double(scored) : NAN, ppl,
             capacity_policy_name(runtime.capacity.policy), 100.0 * dt, 100.0 * dropped,
             moe_totals.added);
  if (!o.dump_logits.empty()) io::write_npy_f32(o.dump_logits, logits.data(), {T, V});
  if (!o.json_path.empty()) {
    nlohmann::json j = {{"model", o.model.model_dir}, {"tokens", T},  {"ids", ids},
                        {"perplexity", ppl},          {"nll", nll},   {"per_token", per_token},
                        {"capacity_policy", runtime.capacity.describe()},
                        {"dropped_token_fraction", dt},
                        {"expert_load", stats.to_json()}};
    io::write_text_file_atomic(o.json_path, j.dump(2) + "\n");
  }
  report_expert_load(stats, o.load_json);
}

}  // namespace

void register_score(CLI::App& app) {
  auto o = std::make_shared<ScoreOptions>();
  CLI::App* cmd = app.add_subcommand("score", "Per-token log-probabilities and perplexity of a text");
  add_model_options(*cmd, o->model);
  add_capacity_options(*cmd, o->capacity);
  auto* text = cmd->add_option("--text", o->text, "Text to score");
  auto* file = cmd->add_option("-f,--file", o->file, "File whose text to score");
  auto* ids = cmd->add_option("--ids", o->ids, "Comma-separated token ids to score instead of text");
  text->excludes(file)->excludes(ids);
  file->excludes(ids);
  cmd->add_option("--dump-logits", o->dump_logits, "Write float32 logits [tokens, vocab] to this .npy file");
  cmd->add_option("--json", o->json_path, "Write per-token log-probs and perplexity as JSON");
  cmd->add_option("--load-json", o->load_json, "Write the expert-load summary as JSON to this file");
  cmd->add_flag("-q,--quiet", o->quiet, "Print only the summary line");
  cmd->callback([o] {
    if (o->text.empty() && o->file.empty() && o->ids.empty())
      fail("give the text to score with --text, --file or --ids");
    io::check_output_path(o->dump_logits, "--dump-logits");
    io::check_output_path(o->json_path, "--json");
    io::check_output_path(o->load_json, "--load-json");
    run_score(*o);
  });
}

}  // namespace sy::cli
