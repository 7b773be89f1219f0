// switchyard profile-neurons: DualSparse-MoE's neuron importance of every routed expert over
// calibration text (moe/neuron_profile.h), saved as safetensors for `partition --importance`.
#include <fmt/core.h>

#include <algorithm>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/engine.h"
#include "io/file_util.h"
#include "moe/neuron_profile.h"
#include "util/error.h"

namespace sy::cli {

namespace {

struct ProfileArgs {
  ModelOptions model;
  std::string text, file, ids, out;
  int64_t window = 256, max_tokens = 0;
};

void run_profile(const ProfileArgs& a) {
  io::check_output_path(a.out, "--out");
  std::unique_ptr<Engine> eng = open_engine(a.model, {}, {}, a.ids.empty());
  if (eng->distributed()) fail("profile-neurons runs in one process (not under mpirun)");
  const model::Model& m = *eng->model;
  const model::ModelConfig& cfg = m.config();
  std::vector<std::vector<moe::FfnWeights>> experts(size_t(cfg.num_layers));
  bool any = false;
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    if (m.weights().layers[size_t(l)].is_moe) {
      experts[size_t(l)] = m.weights().layers[size_t(l)].moe.experts;
      any = true;
    }
  if (!any) fail("'{}' has no routed experts to profile", a.model.model_dir);
  std::vector<int32_t> ids =
      !a.ids.empty() ? parse_ids(a.ids)
                     : eng->tokenizer->encode(a.file.empty() ? a.text : io::read_text_file(a.file));
  for (int32_t id : ids)
    if (id < 0 || id >= cfg.vocab_size)
      fail("token id {} is outside the model's vocabulary (0..{})", id, cfg.vocab_size - 1);
  if (a.max_tokens > 0 && int64_t(ids.size()) > a.max_tokens) ids.resize(size_t(a.max_tokens));
  if (ids.empty()) fail("nothing to profile: the text encodes to zero tokens");
  const int64_t T = int64_t(ids.size());
  const int64_t window = std::min({a.window, T, cfg.max_position_embeddings});

  moe::NeuronProfiler profiler(std::move(experts));
  moe::MoeRuntime runtime = eng->runtime;
  runtime.observer = &profiler;
  model::Workspace ws;
  model::KvCache cache(cfg, window);
  std::vector<float> logits(size_t(cfg.vocab_size));
  const int64_t windows = (T + window - 1) / window;
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t begin = w * window, end = std::min(T, begin + window);
    cache.clear();
    model::SequenceChunk chunk{&cache, {ids.data() + begin, size_t(end - begin)}};
    m.forward({&chunk, 1}, model::LogitsFor::kLastToken, logits.data(), ws, runtime);
    if (isatty(2)) fmt::print(stderr, "\rprofiled {} of {} tokens", end, T);
  }
  if (isatty(2)) fmt::print(stderr, "\n");
  profiler.save(a.out, cfg.architecture);
  int64_t pairs = 0;
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    for (int64_t p : profiler.pairs(int(l))) pairs += p;
  fmt::print("profiled {} tokens ({} windows of up to {}): {} (token, expert) pairs -> {}\n", T,
             windows, window, pairs, a.out);
}

}  // namespace

void register_profile_neurons(CLI::App& app) {
  auto a = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile-neurons",
      "Neuron importance of every routed expert over calibration text (DualSparse-MoE's four "
      "metrics), for partition --importance");
  add_model_options(*cmd, a->model);
  auto* text = cmd->add_option("--text", a->text, "Calibration text");
  auto* file = cmd->add_option("-f,--file", a->file, "File of calibration text");
  auto* ids = cmd->add_option("--ids", a->ids, "Comma-separated token ids instead of text");
  text->excludes(file)->excludes(ids);
  file->excludes(ids);
  cmd->add_option("-o,--out", a->out, "Importance file to write (.safetensors)")->required();
  cmd->add_option("--window", a->window, "Tokens per forward")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-tokens", a->max_tokens, "Profile at most this many tokens (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->callback([a, text, file, ids] {
    if (text->count() + file->count() + ids->count() == 0)
      fail("profile-neurons needs --text, --file or --ids");
    run_profile(*a);
  });
}

}  // namespace sy::cli
