// switchyard generate: prefill the prompt, then decode token by token, streaming text.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/file_util.h"
#include "model/sampler.h"
#include "util/error.h"

namespace sy::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  CapacityOptions capacity;
  std::string prompt;
  std::string ids;
  int max_tokens = 64;
  model::SamplerConfig sampler;
  bool ignore_eos = false;
  std::string load_json;
};

void run_generate(const GenerateOptions& o) {
  LoadedModel lm = load_model(o.model, o.ids.empty());
  const model::ModelConfig& cfg = lm.model.config();
  std::vector<int32_t> prompt = o.ids.empty() ? lm.tokenizer->encode(o.prompt) : parse_ids(o.ids);
  if (prompt.empty()) fail("the prompt is empty: give --prompt TEXT (or --ids) with at least one token");
  if (o.max_tokens < 0) fail("--max-tokens must be >= 0");

  model::KvCache cache(cfg, int64_t(prompt.size()) + o.max_tokens);
  model::Workspace ws;
  model::Sampler sampler(o.sampler);
  moe::LoadStats stats = lm.model.new_load_stats();
  moe::MoeRuntime runtime = make_moe_runtime(o.capacity, cfg.router.num_experts);
  runtime.stats = &stats;
  stats.set_placement(runtime.placement);
  if (runtime.capacity.active() || !runtime.placement.empty())
    fmt::print(stderr, "capacity policy: {}; placement: {}\n", runtime.capacity.describe(),
               runtime.placement.describe());
  std::vector<float> logits(size_t(cfg.vocab_size));
  std::optional<StreamDecoder> stream;
  if (lm.tokenizer) stream.emplace(*lm.tokenizer);

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  model::SequenceChunk chunk{&cache, prompt};
  lm.model.forward({&chunk, 1}, model::LogitsFor::kLastToken, logits.data(), ws, runtime);
  const auto t1 = clock::now();

  if (lm.tokenizer) fmt::print("{}", lm.tokenizer->decode(prompt, /*skip_special_tokens=*/true));
  std::fflush(stdout);
  int generated = 0;
  std::vector<int32_t> output;
  while (generated < o.max_tokens) {
    const int32_t next = sampler.sample(logits.data(), cfg.vocab_size);
    const bool eos = std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), next) !=
                     cfg.eos_token_ids.end();
    if (eos && !o.ignore_eos) break;
    output.push_back(next);
    ++generated;
    if (stream) fmt::print("{}", lm.tokenizer->is_special(next) ? "" : stream->push(next));
    else fmt::print("{} ", next);
    std::fflush(stdout);
    if (generated == o.max_tokens) break;
    model::SequenceChunk step{&cache, {&output.back(), 1}};
    lm.model.forward({&step, 1}, model::LogitsFor::kLastToken, logits.data(), ws, runtime);
  }
  if (stream) fmt::print("{}", stream->flush());
  fmt::print("\n");
  const auto t2 = clock::now();
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  fmt::print(stderr, "\nprompt {} tokens in {:.3f} s ({:.1f} tokens/s); generated {} tokens in {:.3f} s ({:.1f} tokens/s)\n",
             prompt.size(), prefill_s, double(prompt.size()) / prefill_s, generated, decode_s,
             generated > 0 ? double(generated) / decode_s : 0.0);
  report_expert_load(stats, o.load_json);
}

}  // namespace

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt, streaming it");
  add_model_options(*cmd, o->model);
  add_capacity_options(*cmd, o->capacity);
  auto* prompt = cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  auto* ids = cmd->add_option("--ids", o->ids, "Prompt as comma-separated token ids instead of text");
  prompt->excludes(ids);
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Tokens to generate at most")->capture_default_str();
  cmd->add_option("--temperature", o->sampler.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", o->sampler.top_k, "Keep the k most likely tokens (0 = all)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->sampler.top_p, "Keep the smallest set of tokens with this mass")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", o->sampler.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->add_option("--load-json", o->load_json, "Write the expert-load summary as JSON to this file");
  cmd->callback([o] {
    if (o->prompt.empty() && o->ids.empty()) fail("give a prompt with --prompt TEXT or --ids 1,2,3");
    io::check_output_path(o->load_json, "--load-json");
    run_generate(*o);
  });
}

}  // namespace sy::cli
