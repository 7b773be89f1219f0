#include "cli/common.h"

#include <fmt/core.h>

#include "io/file_util.h"
#include "ops/threads.h"
#include "util/error.h"

namespace sy::cli {

void add_model_options(CLI::App& cmd, ModelOptions& o) {
  cmd.add_option("-m,--model", o.model_dir,
                 "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)")
      ->required();
  cmd.add_option("-t,--threads", o.threads, "Threads (0 = all cores)")->capture_default_str();
}

LoadedModel load_model(const ModelOptions& o, bool need_tokenizer) {
  ops::set_num_threads(o.threads);
  LoadedModel m{model::Model::load(o.model_dir), std::nullopt};
  const std::string tok = o.model_dir + "/tokenizer.json";
  if (io::file_exists(tok)) {
    m.tokenizer.emplace(Tokenizer::from_file(tok));
  } else if (need_tokenizer) {
    fail("'{}' has no tokenizer.json (pass token ids with --ids instead of text)", o.model_dir);
  }
  return m;
}

void report_expert_load(const moe::LoadStats& stats, const std::string& json_path) {
  fmt::print(stderr, "\nExpert load (tokens per expert, per MoE layer):\n{}", stats.table());
  if (!json_path.empty()) io::write_text_file_atomic(json_path, stats.to_json().dump(2) + "\n");
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      fail("--ids: '{}' is not a non-negative token id", item);
    }
    pos = end + 1;
  }
  return ids;
}

}  // namespace sy::cli
