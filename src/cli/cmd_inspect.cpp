// switchyard inspect: the config as Switchyard understands it, the tensor inventory, and
// total / active parameters per token.
#include <fmt/core.h>

#include <algorithm>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/engine.h"
#include "model/weights.h"
#include "util/error.h"

namespace sy::cli {
namespace {

struct InspectOptions {
  ModelOptions model;
  bool tensors = false;
};

std::string human(double n) {
  if (n >= 1e9) return fmt::format("{:.2f} B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f} M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f} K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

void run_inspect(const InspectOptions& o) {
  const std::unique_ptr<Engine> lm = open_engine(o.model, {}, {}, false);
  const model::ModelConfig& c = lm->model->config();
  const model::ModelWeights& w = lm->model->weights();
  int num_moe = 0;
  for (bool m : c.layer_is_moe) num_moe += m;
  fmt::print("model        {}\n", o.model.model_dir);
  fmt::print("architecture {} (family {})\n", c.architecture, c.family_name());
  fmt::print("layers       {} ({} MoE, {} dense)\n", c.num_layers, num_moe, c.num_layers - num_moe);
  fmt::print("hidden       {}   vocab {}   tied embeddings {}\n", c.hidden_size, c.vocab_size,
             c.tie_word_embeddings ? "yes" : "no");
  if (const model::MlaConfig& m = c.mla; m.enabled()) {
    fmt::print(
        "attention    MLA: {} heads x (q/k {} = {} + rope {}, v {}), latent {}, q-LoRA {}, "
        "{} RoPE\n",
        c.num_heads, m.qk_head_dim(), m.qk_nope_dim, m.qk_rope_dim, m.v_head_dim, m.kv_lora_rank,
        m.q_lora_rank > 0 ? std::to_string(m.q_lora_rank) : "none",
        m.interleaved_rope ? "interleaved" : "half-split");
    // What MLA exists for: the latent and the rotary key, against the expanded heads.
    const int64_t expanded = c.num_heads * (m.qk_head_dim() + m.v_head_dim);
    fmt::print(
        "KV cache     {} floats per token per layer ({} B per token), {:.1f}x less than {} "
        "for expanded heads\n",
        m.latent_width(), m.latent_width() * 4 * c.num_layers,
        double(expanded) / double(m.latent_width()), expanded);
  } else {
    fmt::print(
        "attention    {} heads / {} KV heads x {} dims{}{}{}\n", c.num_heads, c.num_kv_heads,
        c.head_dim, c.qkv_bias ? ", qkv bias" : "",
        c.qk_norm == model::QkNorm::kPerHead            ? ", per-head q/k RMSNorm"
        : c.qk_norm == model::QkNorm::kPerHeadAfterRope ? ", per-head q/k RMSNorm after RoPE"
        : c.qk_norm == model::QkNorm::kFullWidth        ? ", full-width q/k RMSNorm"
        : c.qk_norm == model::QkNorm::kL2AfterRope      ? ", q/k L2 norm after RoPE"
                                                        : "",
        c.rotary_dim > 0 ? fmt::format(", RoPE on {} of {} dims", c.rotary_dim, c.head_dim) : "");
    fmt::print("KV cache     {} floats per token per layer ({} B per token)\n",
               c.cache_key_width() + c.cache_value_width(),
               (c.cache_key_width() + c.cache_value_width()) * 4 * c.num_layers);
  }
  std::vector<std::string> variants;
  if (!c.layer_window.empty()) {
    int64_t sliding = 0;
    for (int64_t w : c.layer_window) sliding += w > 0;
    variants.push_back(fmt::format("sliding window {} on {} of {} layers",
                                   *std::max_element(c.layer_window.begin(), c.layer_window.end()),
                                   sliding, c.num_layers));
  }
  if (!c.layer_chunk.empty()) {
    int64_t chunked = 0;
    for (int64_t n : c.layer_chunk) chunked += n > 0;
    if (chunked > 0)
      variants.push_back(fmt::format("chunked attention ({} positions) on {} of {} layers",
                                     *std::max_element(c.layer_chunk.begin(), c.layer_chunk.end()),
                                     chunked, c.num_layers));
  }
  if (!c.layer_nope.empty()) {
    const auto nope = std::count(c.layer_nope.begin(), c.layer_nope.end(), true);
    if (nope > 0)
      variants.push_back(fmt::format("{} NoPE layers{}", nope,
                                     c.attn_temperature_scale > 0 ? " (query temperature)" : ""));
  }
  if (c.rope_scaling.longrope)
    variants.push_back(fmt::format("LongRoPE (short factors up to {} positions, long beyond)",
                                   c.rope_scaling.original_max_positions));
  if (c.rope_scaling.llama3)
    variants.push_back(fmt::format("llama3 RoPE x{} (from {} positions)", c.rope_scaling.factor,
                                   c.rope_scaling.original_max_positions));
  if (c.layer_norm) variants.push_back(c.norm_bias ? "LayerNorm" : "LayerNorm without bias");
  if (c.clip_qkv > 0) variants.push_back(fmt::format("q/k/v clipped to +-{}", c.clip_qkv));
  if (c.expert_input_scaled) variants.push_back("router weights scale the experts' inputs");
  if (c.attention_sinks) variants.push_back("attention sinks");
  if (c.rope_scaling.yarn)
    variants.push_back(fmt::format("YaRN RoPE x{} (from {} positions)", c.rope_scaling.factor,
                                   c.rope_scaling.original_max_positions > 0
                                       ? c.rope_scaling.original_max_positions
                                       : double(c.max_position_embeddings)));
  if (c.router_bias) variants.push_back("router bias");
  if (c.swiglu_limit > 0)
    variants.push_back(
        fmt::format("experts with biases, clamped SwiGLU (limit {})", c.swiglu_limit));
  if (!variants.empty()) {
    std::string line;
    for (const std::string& v : variants) line += (line.empty() ? "" : ", ") + v;
    fmt::print("variants     {}\n", line);
  }
  if (c.has_scaled_stream())
    fmt::print("multipliers  embedding {}, residual {}, attention {}, logits 1/{}\n",
               c.embedding_multiplier, c.residual_multiplier, c.attention_scale(),
               c.logits_scaling);
  fmt::print("experts      {} x FFN {}, top-{}{}\n", c.router.num_experts,
             c.expert_intermediate_size, c.router.top_k,
             c.shared_intermediate_size
                 ? fmt::format(", shared FFN {}{}", c.shared_intermediate_size,
                               c.shared_expert_gated ? " (sigmoid-gated)" : "")
                 : "");
  fmt::print("routing      {}\n", c.router.describe());
  if (c.router.sub_experts > 1)
    fmt::print("partition    {} parts per expert ({} transformation{})\n", c.router.sub_experts,
               c.router.expand_parts ? "partial" : "complete",
               c.partition_reconstructed ? ", part 0 = major neurons" : "");
  if (c.family == model::Family::kScMoe) {
    const char* where[] = {"the current layer (no shortcut)", "pos1: the preceding layer's output",
                           "pos2: the preceding layer after attention, before its MLP",
                           "pos3: the preceding layer's input"};
    fmt::print("ScMoE        routed branch reads {}; combine {}\n", where[int(c.shortcut)],
               c.branch_softmax_gate   ? "CG-2 (softmax over shared and routed)"
               : c.shared_expert_gated ? "CG-1 (sigmoid-gated shared expert + routed)"
                                       : "direct add");
  }
  const model::ParamCounts p = model::count_params(c);
  fmt::print("parameters   {} total, {} active per token ({} excluding the embedding)\n",
             human(double(p.total)), human(double(p.active_per_token)),
             human(double(p.total - p.embedding)));
  fmt::print("weights      {:.1f} MB on disk; {:.1f} MB read per decoded token\n",
             double(w.store.total_bytes()) / 1e6,
             double(model::decode_bytes_per_token(c, w)) / 1e6);
  fmt::print("tokenizer    {}\n", lm->tokenizer
                                      ? fmt::format("{} tokens", lm->tokenizer->vocab_size())
                                      : std::string("none (no tokenizer.json)"));
  if (w.num_unused_tensors)
    fmt::print("note         {} tensors in the files are not used\n", w.num_unused_tensors);
  if (!o.tensors) return;
  fmt::print("\n{:<60} {:>6} {:>20}\n", "tensor", "dtype", "shape");
  for (const auto& [name, t] : w.store.all())
    fmt::print("{:<60} {:>6} {:>20}\n", name, t->dtype_name, t->shape_str());
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* cmd =
      app.add_subcommand("inspect", "Show a checkpoint's config, tensors and parameter counts");
  add_model_options(*cmd, o->model);
  cmd->add_flag("--tensors", o->tensors, "List every tensor with dtype and shape");
  cmd->callback([o] { run_inspect(*o); });
}

}  // namespace sy::cli
