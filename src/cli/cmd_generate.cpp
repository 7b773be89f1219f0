// switchyard generate: prefill the prompt, then decode token by token, streaming text.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/engine.h"
#include "cli/run_report.h"
#include "io/file_util.h"
#include "model/sampler.h"
#include "util/error.h"

namespace sy::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  CapacityOptions capacity;
  std::string prompt;
  std::string file;  // prompt text from a file
  std::string ids;
  int max_tokens = 64;
  model::SamplerConfig sampler;
  bool ignore_eos = false;
  ReportOptions report;
  ParallelOptions parallel;
};

// Under expert parallelism rank 0 owns the sequence and samples; the other ranks hold experts
// and take part in every forward call with no tokens of their own (the all-to-alls are
// collective), told by a broadcast whether another step follows.
void run_generate(const GenerateOptions& o) {
  std::unique_ptr<Engine> eng = open_engine(o.model, o.capacity, o.parallel, o.ids.empty());
  const model::Model& m = *eng->model;
  const model::ModelConfig& cfg = m.config();
  const bool root = eng->is_root();
  std::vector<int32_t> prompt =
      !o.ids.empty()
          ? parse_ids(o.ids)
          : eng->tokenizer->encode(o.file.empty() ? o.prompt : io::read_text_file(o.file));
  if (prompt.empty())
    fail("the prompt is empty: give --prompt TEXT (or --file, --ids) with at least one token");
  if (o.max_tokens < 0) fail("--max-tokens must be >= 0");
  if (int64_t(prompt.size()) + o.max_tokens > cfg.max_position_embeddings)
    fail(
        "the prompt's {} tokens plus --max-tokens {} exceed the model's context of {} positions "
        "(max_position_embeddings): lower --max-tokens",
        prompt.size(), o.max_tokens, cfg.max_position_embeddings);

  RunReport report(o.report, eng->runtime, eng->distributed() ? eng->rank() : -1);
  model::KvCache cache(cfg, int64_t(prompt.size()) + o.max_tokens);
  model::Workspace ws;
  model::Sampler sampler(o.sampler);
  std::vector<float> logits(size_t(cfg.vocab_size));
  std::optional<StreamDecoder> stream;
  if (eng->tokenizer) stream.emplace(*eng->tokenizer);
  auto step = [&](std::span<const int32_t> tokens) {
    model::SequenceChunk chunk{&cache, tokens};
    const size_t n = root ? 1 : 0;  // only rank 0 holds the sequence
    m.forward({&chunk, n}, model::LogitsFor::kLastToken, logits.data(), ws, eng->runtime);
  };

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  step(prompt);
  const auto t1 = clock::now();

  if (root && eng->tokenizer)
    fmt::print("{}", eng->tokenizer->decode(prompt, /*skip_special_tokens=*/true));
  std::fflush(stdout);
  int generated = 0;
  std::vector<int32_t> output;
  while (generated < o.max_tokens) {
    std::vector<int32_t> next{-1};  // -1: stop
    if (root) {
      const int32_t id = sampler.sample(logits.data(), cfg.vocab_size);
      const bool eos = std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), id) !=
                       cfg.eos_token_ids.end();
      if (!(eos && !o.ignore_eos)) next[0] = id;
    }
    eng->comm->broadcast(next);
    if (next[0] < 0) break;
    output.push_back(next[0]);
    ++generated;
    if (root) {
      if (stream)
        fmt::print("{}", eng->tokenizer->is_special(next[0]) ? "" : stream->push(next[0]));
      else
        fmt::print("{} ", next[0]);
      std::fflush(stdout);
    }
    if (generated == o.max_tokens) break;
    step({&output.back(), 1});
  }
  const auto t2 = clock::now();
  reduce_load_stats(*eng, eng->stats);
  if (root) {
    if (stream) fmt::print("{}", stream->flush());
    fmt::print("\n");
    std::fflush(stdout);  // the text ends before the reports on stderr begin
    const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
    const double decode_s = std::chrono::duration<double>(t2 - t1).count();
    fmt::print(stderr,
               "\nprompt {} tokens in {:.3f} s ({:.1f} tokens/s); generated {} tokens in {:.3f} s "
               "({:.1f} tokens/s)\n",
               prompt.size(), prefill_s, double(prompt.size()) / prefill_s, generated, decode_s,
               generated > 0 ? double(generated) / decode_s : 0.0);
  }
  report.finish(eng->stats, m, eng->runtime);
  report_expert_parallel(*eng, o.parallel.ep_json);
}

}  // namespace

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt, streaming it");
  add_model_options(*cmd, o->model);
  add_capacity_options(*cmd, o->capacity);
  auto* prompt = cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  auto* file = cmd->add_option("-f,--file", o->file,
                               "File whose text is the prompt (for prompts longer than a command "
                               "line holds)");
  auto* ids =
      cmd->add_option("--ids", o->ids, "Prompt as comma-separated token ids instead of text");
  prompt->excludes(ids);
  prompt->excludes(file);
  file->excludes(ids);
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Tokens to generate at most")
      ->capture_default_str();
  cmd->add_option("--temperature", o->sampler.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str()
      ->check(kFiniteNumber & CLI::NonNegativeNumber);
  cmd->add_option("--top-k", o->sampler.top_k, "Keep the k most likely tokens (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->sampler.top_p, "Keep the smallest set of tokens with this mass")
      ->capture_default_str()
      ->check(kFiniteNumber & CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", o->sampler.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past the end-of-sequence token");
  add_report_options(*cmd, o->report);
  add_parallel_options(*cmd, o->parallel);
  cmd->callback([o] {
    if (o->prompt.empty() && o->ids.empty() && o->file.empty())
      fail("give a prompt with --prompt TEXT, --file PATH or --ids 1,2,3");
    check_report_paths(o->report);
    io::check_output_path(o->parallel.ep_json, "--ep-json");
    run_generate(*o);
  });
}

}  // namespace sy::cli
