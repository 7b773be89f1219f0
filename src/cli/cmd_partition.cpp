// switchyard partition: split every routed expert into P sub-experts (DualSparse-MoE's
// complete or partial transformation, model/expert_partition.h) and write the result as a new
// checkpoint; --merge undoes it.
#include <fmt/core.h>

#include <algorithm>
#include <numeric>

#include "cli/commands.h"
#include "model/config.h"
#include "model/expert_partition.h"
#include "moe/neuron_profile.h"
#include "util/error.h"

namespace sy::cli {

namespace {

// Expert reconstruction: each expert's neurons by descending importance, so sub-expert 0 is
// the most important 1/P of them (the major half when P = 2).
std::vector<std::vector<std::vector<int32_t>>> importance_order(const std::string& model_dir,
                                                                const std::string& path,
                                                                moe::NeuronMetric metric) {
  const model::ModelConfig c = model::load_config(model_dir);
  const auto importance = moe::load_neuron_importance(path, c.layer_is_moe, c.router.num_experts,
                                                      c.expert_intermediate_size, metric);
  std::vector<std::vector<std::vector<int32_t>>> order(importance.size());
  for (size_t l = 0; l < importance.size(); ++l)
    for (const std::vector<float>& v : importance[l]) {
      std::vector<int32_t> o(v.size());
      std::iota(o.begin(), o.end(), 0);
      std::stable_sort(o.begin(), o.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
      order[l].push_back(std::move(o));
    }
  return order;
}

}  // namespace

void register_partition(CLI::App& app) {
  struct Args {
    std::string model, out, importance, metric = "abs_silu", mode = "complete";
    bool merge = false;
    model::PartitionOptions options;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "partition",
      "Split every routed expert into P sub-experts of 1/P its width (DualSparse-MoE): the "
      "same function, with parts that 1T/2T-Drop can skip; --merge undoes it");
  cmd->add_option("-m,--model", a->model, "Hugging Face model directory to read")->required();
  cmd->add_option("-o,--out", a->out, "New model directory to write (must not exist)")->required();
  cmd->add_option("-p,--factor", a->options.factor, "Sub-experts per expert (P)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1024));
  cmd->add_option("--mode", a->mode,
                  "complete: repeat each gate row P times and route top-(K*P) parts (a normal "
                  "checkpoint any engine runs); partial: keep the gate, route top-K experts, "
                  "each to all its parts (group-limited routing too; Switchyard only, not "
                  "trainable)")
      ->capture_default_str();
  cmd->add_option("--importance", a->importance,
                  "Reconstruct experts: order each expert's neurons by this profile-neurons file "
                  "(most important first, so sub-expert 0 is the major part)");
  cmd->add_option("--metric", a->metric,
                  "Importance metric: silu | abs_silu | silu_up | abs_silu_up")
      ->capture_default_str();
  cmd->add_flag("--merge", a->merge,
                "Undo a partition: write the model with whole experts again (every neuron back "
                "in its place)");
  cmd->callback([a] {
    if (a->merge) {
      if (!a->importance.empty() || a->mode != "complete")
        fail(
            "--merge reads everything it needs from the partitioned model; drop "
            "--importance / --mode");
      const model::PartitionSummary s = model::merge_experts(a->model, a->out);
      fmt::print(
          "merged {} MoE layers: {} parts x FFN {} top-{} -> {} experts x FFN {} top-{} (down "
          "projections x{:g}); {} tensors in {}\n",
          s.moe_layers, s.experts_before, s.width_before, s.top_k_before, s.experts_after,
          s.width_after, s.top_k_after, s.down_scale, s.tensors_written, a->out);
      return;
    }
    if (a->mode != "complete" && a->mode != "partial")
      fail("--mode must be complete or partial, got '{}'", a->mode);
    a->options.partial = a->mode == "partial";
    const moe::NeuronMetric metric = moe::parse_neuron_metric(a->metric);
    if (!a->importance.empty())
      a->options.neuron_order = importance_order(a->model, a->importance, metric);
    const model::PartitionSummary s = model::partition_experts(a->model, a->out, a->options);
    fmt::print(
        "partitioned {} MoE layers ({} transformation): {} experts x FFN {} top-{} -> {} parts x "
        "FFN {} top-{} ({}down projections x{:g}{}); {} tensors in {}\n",
        s.moe_layers, a->mode, s.experts_before, s.width_before, s.top_k_before, s.experts_after,
        s.width_after, s.top_k_after,
        a->options.partial ? "gate kept, "
                           : fmt::format("router rows repeated {}x, ", a->options.factor),
        s.down_scale, a->importance.empty() ? "" : "; neurons ordered by " + a->metric,
        s.tensors_written, a->out);
  });
}

}  // namespace sy::cli
