// Grows a trained model's routed experts to a large model's bytes without changing what it
// computes: every expert gets zero neurons up to --width (model::pad_experts). The offloading
// study (bench/specmoeoff.sh) uses it so that expert transfer costs what a large model's would
// while the draft's acceptance stays that of a real trained pair.
//   pad_experts --model models/kjv-moe-9m --width 20480 --out /tmp/kjv-moe-9m-wide
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "model/expert_partition.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Pad every routed expert with zero neurons to --width: the same function, more expert "
      "bytes (a stand-in for a larger model in offloading studies)"};
  std::string model, out;
  int64_t width = 0;
  app.add_option("-m,--model", model, "Hugging Face model directory to read")->required();
  app.add_option("-o,--out", out, "New model directory to write (must not exist)")->required();
  app.add_option("--width", width, "New FFN width of every routed expert")
      ->required()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  CLI11_PARSE(app, argc, argv);
  try {
    const sy::model::PartitionSummary s = sy::model::pad_experts(model, out, width);
    fmt::print("padded {} MoE layers: {} experts x FFN {} -> FFN {}; {} tensors in {}\n",
               s.moe_layers, s.experts_after, s.width_before, s.width_after, s.tensors_written,
               out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
