// switchyard make-tiny: write a random-weight checkpoint of a supported family in the real
// Hugging Face layout, for tests, benchmarks and trying the engine without a download.
#include <fmt/core.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "synth/synthetic_checkpoint.h"
#include "util/error.h"

namespace sy::cli {

void register_make_tiny(CLI::App& app) {
  auto s = std::make_shared<synth::SyntheticSpec>();
  auto out = std::make_shared<std::string>();
  auto shape = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "make-tiny",
      "Write a random-weight MoE checkpoint (config.json + safetensors + tokenizer.json)");
  cmd->add_option("-o,--out", *out, "Output directory")->required();
  add_family_option(*cmd, s->family, "");
  cmd->add_option("--reference-shape", *shape,
                  "Use a benchmark shape of machine.md: A (Mixtral-like) or B (OLMoE-like); "
                  "--layers may change its depth, the other shape flags are refused");
  cmd->add_option("--vocab", s->vocab_size, "Vocabulary size (0 = the generated tokenizer's size)")
      ->capture_default_str();
  cmd->add_option("--hidden", s->hidden_size, "Hidden size")->capture_default_str();
  cmd->add_option("--layers", s->num_layers, "Layers")->capture_default_str();
  cmd->add_option("--heads", s->num_heads, "Attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", s->num_kv_heads, "Key/value heads")->capture_default_str();
  cmd->add_option("--head-dim", s->head_dim, "Head dimension (0 = hidden / heads)")
      ->capture_default_str();
  cmd->add_option("--experts", s->num_experts, "Routed experts")->capture_default_str();
  auto given = std::make_shared<ScMoeOptions>();
  given->top_k =
      cmd->add_option("--top-k", s->top_k, "Experts per token (scmoe: 1)")->capture_default_str();
  cmd->add_option("--expert-ffn", s->expert_ffn, "Expert FFN width")->capture_default_str();
  cmd->add_option("--dense-ffn", s->dense_ffn, "Dense-layer FFN width")->capture_default_str();
  given->shared_ffn =
      cmd->add_option("--shared-ffn", s->shared_ffn,
                      "Shared expert width (qwen2_moe, dots1; scmoe: the expert width)")
          ->capture_default_str();
  cmd->add_option("--dense-layers", s->first_dense_layers, "Leading dense layers")
      ->capture_default_str();
  cmd->add_option("--groups", s->num_groups, "Expert groups (dots1)")->capture_default_str();
  cmd->add_option("--topk-groups", s->topk_groups, "Groups kept per token (dots1)")
      ->capture_default_str();
  cmd->add_option("--routed-scale", s->routed_scaling_factor, "Routed scaling factor (dots1)")
      ->capture_default_str();
  cmd->add_option("--norm-topk", s->norm_topk_prob,
                  "Renormalise top-k weights: 1, 0, or -1 for the family default")
      ->capture_default_str();
  cmd->add_option("--clip-qkv", s->clip_qkv, "Clamp q, k, v (olmoe; 0 = off)")
      ->capture_default_str();
  cmd->add_flag("--tie-embeddings", s->tie_embeddings, "Share the embedding with the LM head");
  cmd->add_option("--dtype", s->dtype, "F32 | F16 | BF16")->capture_default_str();
  cmd->add_flag("--fused-experts", s->fused_experts,
                "Write experts as fused 3-D tensors (transformers v5)");
  cmd->add_option("--shards", s->num_shards, "Split into this many safetensors shards")
      ->capture_default_str();
  cmd->add_option("--tokenizer", s->tokenizer, "auto | byte_level | sentencepiece | none")
      ->capture_default_str();
  cmd->add_option("--seed", s->seed, "Random seed")->capture_default_str();
  add_scmoe_options(*cmd, *s);
  cmd->callback([cmd, s, out, shape, given] {
    synth::SyntheticSpec spec = *s;
    scmoe_defaults(*given, spec);
    if (!shape->empty()) {
      for (const char* flag : {"--vocab", "--hidden", "--heads", "--kv-heads", "--head-dim",
                               "--experts", "--top-k", "--expert-ffn", "--family"})
        if (cmd->count(flag) > 0)
          fail("{} conflicts with --reference-shape {} (which fixes it); leave one out", flag,
               *shape);
      synth::SyntheticSpec ref = synth::reference_shape(*shape);
      if (cmd->count("--layers") > 0) ref.num_layers = s->num_layers;
      ref.dtype = s->dtype;
      ref.seed = s->seed;
      ref.tokenizer = s->tokenizer;
      ref.num_shards = s->num_shards;
      spec = ref;
    }
    make_output_dir(*out, "--out");
    for (const auto& f : synth::write_synthetic_checkpoint(spec, *out)) fmt::print("wrote {}\n", f);
  });
}

}  // namespace sy::cli
