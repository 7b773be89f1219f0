// switchyard tokenize: a model's token ids for a text (as llama.cpp's llama-tokenize), from a
// Hugging Face folder's tokenizer.json or a GGUF file's vocabulary; without loading weights.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/engine.h"
#include "io/file_util.h"
#include "util/error.h"

namespace sy::cli {

namespace {

struct TokenizeArgs {
  std::string model, text, file;
  bool no_special = false;
  bool pieces = false;
};

}  // namespace

void register_tokenize(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize",
      "Print the token ids of a text (comma-separated), from a model folder's tokenizer.json or "
      "a GGUF file's vocabulary");
  cmd->add_option("-m,--model", a->model, "Model directory or .gguf file")->required();
  auto* text = cmd->add_option("--text", a->text, "Text to tokenize");
  auto* file = cmd->add_option("-f,--file", a->file, "File whose text to tokenize");
  text->excludes(file);
  cmd->add_flag("--no-special", a->no_special,
                "Leave out the special tokens the tokenizer adds (e.g. a leading BOS)");
  cmd->add_flag("--pieces", a->pieces, "One line per token: id and its text");
  cmd->callback([a] {
    if (a->text.empty() && a->file.empty()) fail("give the text with --text or --file");
    const std::string text = a->file.empty() ? a->text : io::read_text_file(a->file);
    const std::optional<Tokenizer> tok = load_tokenizer(a->model);
    if (!tok) fail("'{}' has no tokenizer", a->model);
    const std::vector<int32_t> ids = tok->encode(text, !a->no_special);
    if (!a->pieces) {
      fmt::print("{}\n", fmt::join(ids, ","));
      return;
    }
    for (int32_t id : ids) fmt::print("{:>8}  {:?}\n", id, tok->decode({id}));
  });
}

}  // namespace sy::cli
