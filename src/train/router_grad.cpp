#include "train/router_grad.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace sy::train {

namespace {

void softmax_into(const float* x, int n, double* p) {
  const float mx = *std::max_element(x, x + n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += (p[i] = std::exp(double(x[i] - mx)));
  for (int i = 0; i < n; ++i) p[i] /= sum;
}

double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

}  // namespace

void route_weights_backward(const moe::RouterConfig& cfg, const float* logits, const int32_t* ids,
                            const float* dweights, int64_t T, float* dlogits) {
  using moe::ScoreFunc;
  const int E = cfg.num_experts, K = cfg.top_k;
  if (cfg.score == ScoreFunc::kSparseMixer)
    fail("SparseMixer routing (Phi-3.5-MoE) has no backward pass here (inference only)");
#pragma omp parallel
  {
    std::vector<double> p(static_cast<size_t>(E)), w0(static_cast<size_t>(K)),
        dw0(static_cast<size_t>(K)), sel(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* x = logits + t * E;
      const int32_t* id = ids + t * K;
      const float* dw = dweights + t * K;
      float* dx = dlogits + t * E;
      // w0: the values before renormalisation and scaling.
      if (cfg.score == ScoreFunc::kSoftmax) softmax_into(x, E, p.data());
      for (int j = 0; j < K; ++j) {
        switch (cfg.score) {
          case ScoreFunc::kSoftmax:
            w0[j] = p[size_t(id[j])];
            break;
          case ScoreFunc::kSigmoid:
          case ScoreFunc::kSigmoidTopK:
            w0[j] = sigmoid(x[id[j]]);
            break;
          case ScoreFunc::kSoftmaxTopK:
            sel[j] = x[id[j]];
            break;
          case ScoreFunc::kSparseMixer:  // refused above
            break;
        }
      }
      if (cfg.score == ScoreFunc::kSoftmaxTopK) {
        const double mx = *std::max_element(sel.begin(), sel.end());
        double sum = 0;
        for (int j = 0; j < K; ++j) sum += (w0[j] = std::exp(sel[j] - mx));
        for (int j = 0; j < K; ++j) w0[j] /= sum;
      }
      for (int j = 0; j < K; ++j) dw0[j] = double(dw[j]) * cfg.routed_scaling_factor;
      if (cfg.renormalize) {  // w = w0 / (sum w0 + eps)
        double sum = 0, dot = 0;
        for (int j = 0; j < K; ++j) sum += w0[j];
        const double denom = sum + cfg.renormalize_epsilon;
        for (int j = 0; j < K; ++j) dot += dw0[j] * w0[j];
        for (int j = 0; j < K; ++j) dw0[j] = dw0[j] / denom - dot / (denom * denom);
      }
      switch (cfg.score) {
        case ScoreFunc::kSoftmax: {  // dp scattered, then through the full softmax
          double dot = 0;
          for (int j = 0; j < K; ++j) dot += dw0[j] * p[size_t(id[j])];
          for (int e = 0; e < E; ++e) dx[e] += float(-p[size_t(e)] * dot);
          for (int j = 0; j < K; ++j) dx[id[j]] += float(p[size_t(id[j])] * dw0[j]);
          break;
        }
        case ScoreFunc::kSigmoid:
        case ScoreFunc::kSigmoidTopK:
          for (int j = 0; j < K; ++j) dx[id[j]] += float(dw0[j] * w0[j] * (1.0 - w0[j]));
          break;
        case ScoreFunc::kSoftmaxTopK: {
          double dot = 0;
          for (int j = 0; j < K; ++j) dot += dw0[j] * w0[j];
          for (int j = 0; j < K; ++j) dx[id[j]] += float(w0[j] * (dw0[j] - dot));
          break;
        }
        case ScoreFunc::kSparseMixer:  // refused above
          break;
      }
    }
  }
}

std::vector<int64_t> expert_counts(const int32_t* ids, int64_t n, int E) {
  std::vector<int64_t> counts(static_cast<size_t>(E), 0);
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] >= 0) ++counts[size_t(ids[i])];
  return counts;
}

void noisy_gating_backward(const float* noise_logits, const float* noise, const float* dH,
                           int64_t n, float* d_noise_logits) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = noise_logits[i];
    const double softplus = x > 20 ? x : std::log1p(std::exp(x));
    const double sig = 1.0 / (1.0 + std::exp(-x));
    // eps = noise / softplus(x); d/dx [eps softplus(x)] = eps sigmoid(x). softplus ~ sigmoid
    // as x -> -inf, so the ratio stays finite.
    const double ratio = softplus > 0 ? sig / softplus : 1.0;
    d_noise_logits[i] += float(double(dH[i]) * double(noise[i]) * ratio);
  }
}

RouterLosses router_losses(const float* logits, const int32_t* ids, int64_t local_T, int E, int K,
                           float aux_scale, float z_scale, float* dlogits,
                           const int64_t* global_counts, int64_t global_tokens) {
  RouterLosses out;
  out.counts = global_counts ? std::vector<int64_t>(global_counts, global_counts + E)
                             : expert_counts(ids, local_T * K, E);
  const int64_t T = global_tokens > 0 ? global_tokens : local_T;  // the mean's denominator
  if (T == 0) return out;
  std::vector<double> D(static_cast<size_t>(E)), P(static_cast<size_t>(E), 0.0),
      p(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) D[size_t(e)] = double(out.counts[size_t(e)]) / double(T * K);
  double zsum = 0;
  for (int64_t t = 0; t < local_T; ++t) {
    const float* x = logits + t * E;
    softmax_into(x, E, p.data());
    const float mx = *std::max_element(x, x + E);
    double s = 0;
    for (int e = 0; e < E; ++e) s += std::exp(double(x[e] - mx));
    const double lse = double(mx) + std::log(s);
    zsum += lse * lse;
    for (int e = 0; e < E; ++e) P[size_t(e)] += p[size_t(e)];
    if (!dlogits) continue;
    // aux: d/dx_e of (E/T) sum_i D_i p_i = (E/T) p_e (D_e - sum_i D_i p_i)
    // z:   d/dx_e of lse^2 / T = 2 lse p_e / T
    double dp_dot = 0;
    for (int e = 0; e < E; ++e) dp_dot += D[size_t(e)] * p[size_t(e)];
    float* dx = dlogits + t * E;
    for (int e = 0; e < E; ++e) {
      const double pe = p[size_t(e)];
      dx[e] += float(aux_scale * double(E) / double(T) * pe * (D[size_t(e)] - dp_dot) +
                     z_scale * 2.0 * lse * pe / double(T));
    }
  }
  for (int e = 0; e < E; ++e) out.aux += double(E) * D[size_t(e)] * P[size_t(e)] / double(T);
  out.z = zsum / double(T);
  return out;
}

}  // namespace sy::train
