// switchyard partition: split every routed expert into P sub-experts (DualSparse-MoE's
// complete transformation, model/expert_partition.h) and write the result as a normal
// checkpoint of the same family.
#include <fmt/core.h>

#include "cli/commands.h"
#include "model/expert_partition.h"

namespace sy::cli {

void register_partition(CLI::App& app) {
  struct Args {
    std::string model, out;
    model::PartitionOptions options;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "partition",
      "Split every routed expert into P sub-experts of 1/P its width (DualSparse-MoE's complete "
      "transformation): a normal checkpoint that computes the same function");
  cmd->add_option("-m,--model", a->model, "Hugging Face model directory to read")->required();
  cmd->add_option("-o,--out", a->out, "New model directory to write (must not exist)")->required();
  cmd->add_option("-p,--factor", a->options.factor, "Sub-experts per expert (P)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1024));
  cmd->callback([a] {
    const model::PartitionSummary s = model::partition_experts(a->model, a->out, a->options);
    fmt::print(
        "partitioned {} MoE layers: {} experts x FFN {} top-{} -> {} experts x FFN {} top-{} "
        "(router rows repeated {}x, down projections x{:g}); {} tensors in {}\n",
        s.moe_layers, s.experts_before, s.width_before, s.top_k_before, s.experts_after,
        s.width_after, s.top_k_after, a->options.factor, s.down_scale, s.tensors_written, a->out);
  });
}

}  // namespace sy::cli
