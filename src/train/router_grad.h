// Gradients of the router: the combine weights route() produced, and the balancing losses
// of the MoE survey (Switch load-balancing loss, ST-MoE router z-loss).
#pragma once

#include <cstdint>
#include <vector>

#include "moe/router.h"

namespace sy::train {

// dlogits [T, E] += d(sum_t,j dweights[t,j] * weights[t,j]) / dlogits, where weights are the
// ones route(config, logits, ...) gave for the selection `ids` [T, k] (dweights of dropped
// pairs are 0). Covers every ScoreFunc with renormalisation and scaling.
void route_weights_backward(const moe::RouterConfig& config, const float* logits,
                            const int32_t* ids, const float* dweights, int64_t num_tokens,
                            float* dlogits);

// Noisy top-k gating (Shazeer et al. 2017), H = logits + eps * softplus(noise_logits) with the
// sampled eps * softplus(noise_logits) in `noise` (route_noisy's noise_out): given dH, adds
// dH * eps * sigmoid(noise_logits) to d_noise_logits (n values). The gradient at the clean
// logits is dH itself.
void noisy_gating_backward(const float* noise_logits, const float* noise, const float* dH,
                           int64_t n, float* d_noise_logits);

struct RouterLosses {
  double aux = 0;  // E * sum_i D_i P_i, D_i = count_i / (T k) (constant), P_i = mean_t softmax
  double z = 0;    // mean_t logsumexp(logits_t)^2
  std::vector<int64_t> counts;  // [E] pairs routed to each expert (before any drop)
};

// Pairs per expert in ids [n] (kDroppedExpert ignored).
std::vector<int64_t> expert_counts(const int32_t* ids, int64_t n, int num_experts);

// Values of both losses for logits [T, E] and the selection ids [T, k]; adds
// aux_scale * daux/dlogits + z_scale * dz/dlogits to dlogits (skipped when dlogits is null).
// When this process holds part of a batch of `global_tokens` tokens (data parallelism),
// `global_counts` [E] are the whole batch's counts; D_i, the mean over tokens in P_i and in z
// then use the whole batch, and the returned aux / z are this part's share of the batch's.
RouterLosses router_losses(const float* logits, const int32_t* ids, int64_t num_tokens,
                           int num_experts, int top_k, float aux_scale, float z_scale,
                           float* dlogits, const int64_t* global_counts = nullptr,
                           int64_t global_tokens = 0);

}  // namespace sy::train
