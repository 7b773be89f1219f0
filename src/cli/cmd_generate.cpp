// switchyard generate: prefill the prompt(s), then decode (a batch together, optionally with a
// draft model's speculation), streaming the text of a single prompt.
#include <fmt/core.h>

#include <charconv>
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/engine.h"
#include "cli/run_report.h"
#include "io/file_util.h"
#include "model/generation.h"
#include "model/sampler.h"
#include "util/error.h"

namespace sy::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  CapacityOptions capacity;
  std::string prompt;
  std::string file;     // prompt text from a file
  std::string prompts;  // a file of prompts, one per line, decoded together
  std::string ids;
  int max_tokens = 64;
  model::SamplerConfig sampler;
  bool ignore_eos = false;
  std::string draft;
  std::string draft_len = "4";
  std::string json_path;
  ReportOptions report;
  ParallelOptions parallel;
};

std::vector<std::vector<int32_t>> read_prompts(const GenerateOptions& o, const Engine& eng) {
  if (!o.ids.empty()) return {parse_ids(o.ids)};
  if (o.prompts.empty())
    return {eng.tokenizer->encode(o.file.empty() ? o.prompt : io::read_text_file(o.file))};
  std::vector<std::vector<int32_t>> out;
  const std::string text = io::read_text_file(o.prompts);
  size_t line = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    ++line;
    std::string_view p(text.data() + begin, end - begin);
    if (!p.empty() && p.back() == '\r') p.remove_suffix(1);
    if (!p.empty()) out.push_back(eng.tokenizer->encode(std::string(p)));
    if (!p.empty() && out.back().empty()) fail("{}: line {} encodes to no tokens", o.prompts, line);
    begin = end + 1;
  }
  if (out.empty()) fail("{}: no prompts (one per line)", o.prompts);
  return out;
}

int parse_draft_len(const std::string& text) {
  if (text == "auto") return -1;
  int k = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), k);
  if (ec != std::errc() || end != text.data() + text.size() || k < 1 || k > 64)
    fail("--draft-len must be a number of tokens in 1 .. 64 or auto, got '{}'", text);
  return k;
}

// Opens the draft model for speculative decoding: on rank 0 only (it runs there, whole), and
// with the target's tokenizer (same ids for the same text).
std::unique_ptr<model::Model> open_draft(const GenerateOptions& o, const Engine& eng) {
  if (o.draft.empty() || !eng.is_root()) return nullptr;
  auto draft = std::make_unique<model::Model>(model::Model::load(o.draft));
  if (draft->config().vocab_size != eng.model->config().vocab_size)
    fail(
        "the draft model's vocabulary has {} tokens but the target's has {}: a draft must share "
        "its target's tokenizer",
        draft->config().vocab_size, eng.model->config().vocab_size);
  const std::string target_tok = eng.model->dir() + "/tokenizer.json";
  const std::string draft_tok = o.draft + "/tokenizer.json";
  if (io::file_exists(target_tok) && io::file_exists(draft_tok) &&
      io::read_text_file(target_tok) != io::read_text_file(draft_tok))
    fail(
        "the draft model '{}' has another tokenizer than the target '{}': speculative decoding "
        "compares token ids, so they must share tokenizer.json",
        o.draft, eng.model->dir());
  return draft;
}

// Under expert parallelism rank 0 owns the sequences, samples and runs the draft; the other
// ranks hold experts and take part in every target forward call with no tokens of their own
// (the all-to-alls are collective), told by a broadcast whether another call follows.
void run_generate(const GenerateOptions& o) {
  std::unique_ptr<Engine> eng =
      open_engine(o.model, o.capacity, o.parallel, o.ids.empty() || !o.prompts.empty());
  const model::Model& m = *eng->model;
  const model::ModelConfig& cfg = m.config();
  const bool root = eng->is_root();
  const std::vector<std::vector<int32_t>> prompts = read_prompts(o, *eng);
  for (const auto& p : prompts)
    if (p.empty())
      fail("the prompt is empty: give --prompt TEXT (or --file, --ids) with at least one token");
  const std::unique_ptr<model::Model> draft = open_draft(o, *eng);

  RunReport report(o.report, eng->runtime, eng->distributed() ? eng->rank() : -1);
  model::Workspace ws;
  auto collective = [&](bool another) {
    if (!eng->distributed()) return;
    std::vector<int32_t> go{another ? 1 : 0};
    eng->comm->broadcast(go);
  };
  auto forward = [&](std::span<const model::SequenceChunk> chunks, model::LogitsFor which,
                     float* logits) {
    collective(true);
    m.forward(chunks, which, logits, ws, eng->runtime);
  };

  if (!root) {  // expert host: join each of rank 0's forward calls
    for (;;) {
      std::vector<int32_t> go{0};
      eng->comm->broadcast(go);
      if (go[0] == 0) break;
      m.forward({}, model::LogitsFor::kLastToken, nullptr, ws, eng->runtime);
    }
  } else {
    model::GenerationConfig gc;
    gc.max_tokens = o.max_tokens;
    gc.stop_at_eos = !o.ignore_eos;
    gc.sampler = o.sampler;
    gc.draft_len = draft ? parse_draft_len(o.draft_len) : 0;
    model::Generator generator(cfg, forward, gc, draft.get());
    generator.set_expert_cache(m.expert_cache());
    try {
      generator.check(prompts);
    } catch (...) {
      collective(false);
      throw;
    }
    const bool one = prompts.size() == 1;
    std::optional<StreamDecoder> stream;
    if (one && eng->tokenizer) {
      stream.emplace(*eng->tokenizer);
      fmt::print("{}", eng->tokenizer->decode(prompts[0], /*skip_special_tokens=*/true));
      std::fflush(stdout);
    }
    std::vector<std::vector<int32_t>> outputs;
    try {
      outputs = generator.run(prompts, [&](size_t, int32_t id) {
        if (!one) return;  // batches print whole sequences at the end
        if (stream)
          fmt::print("{}", eng->tokenizer->is_special(id) ? "" : stream->push(id));
        else
          fmt::print("{} ", id);
        std::fflush(stdout);
      });
    } catch (...) {
      collective(false);  // release the expert hosts before reporting the error
      throw;
    }
    collective(false);
    if (stream) fmt::print("{}", stream->flush());
    if (!one)
      for (size_t i = 0; i < prompts.size(); ++i) {
        fmt::print("--- sequence {} ---\n", i + 1);
        if (eng->tokenizer)
          fmt::print("{}{}", eng->tokenizer->decode(prompts[i], true),
                     eng->tokenizer->decode(outputs[i], true));
        else
          for (int32_t id : outputs[i]) fmt::print("{} ", id);
        fmt::print("\n");
      }
    fmt::print("\n");
    std::fflush(stdout);  // the text ends before the reports on stderr begin
    const model::GenerationStats& st = generator.stats();
    fmt::print(stderr,
               "\n{} sequence(s): prompts {} tokens in {:.3f} s ({:.1f} tokens/s); generated {} "
               "tokens in {:.3f} s ({:.1f} tokens/s, {} target forward calls)\n",
               st.sequences, st.prompt_tokens, st.prefill_s,
               double(st.prompt_tokens) / st.prefill_s, st.generated, st.decode_s,
               st.generated > 0 ? double(st.generated) / st.decode_s : 0.0, st.target_calls);
    const double mean_k =
        st.speculative_steps ? double(st.draft_len_sum) / double(st.speculative_steps) : 0.0;
    if (!o.json_path.empty()) {
      nlohmann::json seqs = nlohmann::json::array();
      for (size_t i = 0; i < prompts.size(); ++i)
        seqs.push_back({{"prompt_ids", prompts[i]},
                        {"ids", outputs[i]},
                        {"text", eng->tokenizer ? eng->tokenizer->decode(outputs[i], true) : ""}});
      io::write_text_file_atomic(o.json_path,
                                 nlohmann::json({{"model", o.model.model_dir},
                                                 {"draft", o.draft},
                                                 {"draft_len", gc.draft_len},
                                                 {"mean_draft_len", mean_k},
                                                 {"cost_model_error", st.cost_model_error},
                                                 {"sequences", seqs},
                                                 {"prompt_tokens", st.prompt_tokens},
                                                 {"generated", st.generated},
                                                 {"prefill_s", st.prefill_s},
                                                 {"decode_s", st.decode_s},
                                                 {"draft_s", st.draft_s},
                                                 {"target_calls", st.target_calls},
                                                 {"draft_calls", st.draft_calls},
                                                 {"proposed", st.proposed},
                                                 {"accepted", st.accepted}})
                                         .dump(1) +
                                     "\n");
    }
    if (draft)
      fmt::print(
          stderr,
          "speculative decoding (draft {}, k = {}): {} of {} draft tokens accepted ({:.1f}%), "
          "{:.2f} tokens per sequence per target call; draft {:.3f} s ({:.0f}% of decode)\n",
          o.draft,
          gc.draft_len > 0 ? fmt::format("{}", gc.draft_len)
                           : fmt::format("auto, mean {:.2f}", mean_k),
          st.accepted, st.proposed,
          st.proposed ? 100.0 * double(st.accepted) / double(st.proposed) : 0.0,
          st.target_calls
              ? double(st.generated - st.sequences) / double(st.target_calls) / double(st.sequences)
              : 0.0,
          st.draft_s, st.decode_s > 0 ? 100.0 * st.draft_s / st.decode_s : 0.0);
    if (draft && st.cost_model_error >= 0)
      fmt::print(stderr,
                 "draft-length cost model: predicted step times off by {:.1f}% on average "
                 "(|predicted - measured| / measured)\n",
                 100 * st.cost_model_error);
  }
  reduce_load_stats(*eng, eng->stats);
  report.finish(eng->stats, m, eng->runtime);
  report_expert_parallel(*eng, o.parallel.ep_json);
  report_precision(*eng, o.parallel.precision);
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
  auto* prompts = cmd->add_option("--prompts", o->prompts,
                                  "File of prompts, one per line, decoded together (a batch: one "
                                  "forward call per step serves every sequence)");
  prompt->excludes(ids);
  prompt->excludes(file);
  file->excludes(ids);
  for (auto* other : {prompt, file, ids}) prompts->excludes(other);
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
  cmd->add_option("--draft", o->draft,
                  "Speculative decoding: a small model with the same tokenizer proposes "
                  "--draft-len tokens per sequence and the model checks them in one forward call "
                  "(greedy output is unchanged; sampled output keeps the model's distribution)");
  cmd->add_option("--draft-len", o->draft_len,
                  "Tokens the draft proposes per step (k, 1 .. 64), or auto: a cost model fitted "
                  "to the run's measured step times and acceptance picks k every step (1 .. 8)")
      ->capture_default_str();
  cmd->add_option("--json", o->json_path,
                  "Write every sequence's prompt ids, generated ids and text, and the timings, as "
                  "JSON");
  add_report_options(*cmd, o->report);
  add_parallel_options(*cmd, o->parallel);
  cmd->callback([o] {
    if (o->prompt.empty() && o->ids.empty() && o->file.empty() && o->prompts.empty())
      fail("give a prompt with --prompt TEXT, --file PATH, --prompts FILE or --ids 1,2,3");
    check_report_paths(o->report);
    io::check_output_path(o->json_path, "--json");
    io::check_output_path(o->parallel.ep_json, "--ep-json");
    run_generate(*o);
  });
}

}  // namespace sy::cli
