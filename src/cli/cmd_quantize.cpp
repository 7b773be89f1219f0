// switchyard quantize: a Hugging Face checkpoint as a GGUF file in the layout llama.cpp's
// converter writes (model/gguf_export.h), with its weight matrices in F32, F16, BF16, Q8_0 or
// Q4_0; `--model FILE.gguf` runs the result.
#include <fmt/core.h>

#include "cli/commands.h"
#include "model/gguf_export.h"

namespace sy::cli {

void register_quantize(CLI::App& app) {
  struct Args {
    std::string model, out, type = "Q8_0";
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "quantize",
      "Write a Hugging Face MoE checkpoint (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) as a GGUF file "
      "with its weight matrices in F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, or one of llama.cpp's "
      "mixes: Q4_K_M, MXFP4_MOE (experts MXFP4, the rest Q8_0). Norms and routers stay F32");
  cmd->add_option("-m,--model", a->model, "Hugging Face model directory to read")->required();
  cmd->add_option("-o,--out", a->out, "GGUF file to write (replaced atomically)")->required();
  cmd->add_option("-t,--type", a->type,
                  "F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_K | Q4_K_M | Q6_K | MXFP4_MOE")
      ->capture_default_str();
  cmd->callback([a] {
    const model::GgufExportType type = model::parse_gguf_export_type(a->type);
    const model::GgufExportSummary s = model::export_gguf(a->model, a->out, type);
    fmt::print("wrote {} tensors ({} in {}) to {}: {:.1f} MB\n", s.tensors, s.quantized, a->type,
               a->out, double(s.bytes) / 1e6);
    if (!s.vocab_note.empty()) fmt::print(stderr, "quantize: {}\n", s.vocab_note);
  });
}

}  // namespace sy::cli
