// switchyard export: a training checkpoint (sharded weights, optimizer moments, trainer state)
// as a plain Hugging Face model folder to publish or ship.
#include <fmt/core.h>

#include "cli/commands.h"
#include "model/checkpoint_rewrite.h"

namespace sy::cli {

void register_export(CLI::App& app) {
  struct Args {
    std::string model, out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Write a model folder (e.g. a training checkpoint: train --out DIR leaves DIR/model) as a "
      "plain Hugging Face one: config.json, one model.safetensors, tokenizer.json");
  cmd->add_option("-m,--model", a->model, "Model or checkpoint directory to read")->required();
  cmd->add_option("-o,--out", a->out, "New model directory to write (must not exist)")->required();
  cmd->callback([a] {
    const int64_t n = model::export_model(a->model, a->out);
    fmt::print("wrote {} tensors to {}/model.safetensors (with config.json and tokenizer.json)\n",
               n, a->out);
  });
}

}  // namespace sy::cli
