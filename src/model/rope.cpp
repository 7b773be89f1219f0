#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "ops/elementwise.h"

namespace sy::model {

double yarn_mscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

namespace {

// transformers' _compute_llama3_parameters on float32 frequencies.
void llama3_scale(const RopeScaling& y, std::vector<float>& inv_freq) {
  const double old_context = y.original_max_positions;
  const double low_wavelen = old_context / y.low_freq_factor;
  const double high_wavelen = old_context / y.high_freq_factor;
  const float factor = float(y.factor);
  for (float& f : inv_freq) {
    const float wavelen = float(2 * std::numbers::pi) / f;
    const float scaled = wavelen > float(low_wavelen) ? f / factor : f;
    const bool medium = !(wavelen < float(high_wavelen)) && !(wavelen > float(low_wavelen));
    if (!medium) {
      f = scaled;
      continue;
    }
    const float smooth = (float(old_context) / wavelen - float(y.low_freq_factor)) /
                         float(y.high_freq_factor - y.low_freq_factor);
    f = (1.0f - smooth) * scaled / factor + smooth * scaled;
  }
}

}  // namespace

RopeTable rope_table(const ModelConfig& c, int64_t seq_len) {
  const int64_t dim = c.rope_dim(), half = dim / 2;
  const float base = c.rope_theta;
  RopeTable t;
  t.inv_freq.resize(size_t(half));
  // base ** (arange(0, dim, 2) / dim) in float32, as the reference computes it.
  std::vector<float> pos_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    pos_freq[size_t(i)] = std::pow(base, float(2 * i) / float(dim));
  const RopeScaling& y = c.rope_scaling;
  if (y.longrope) {  // transformers' _compute_longrope_parameters and Phi's mscales
    const bool long_ctx = double(seq_len) > y.original_max_positions;
    const std::vector<float>& ext = long_ctx ? y.long_factor : y.short_factor;
    for (int64_t i = 0; i < half; ++i)
      t.inv_freq[size_t(i)] = 1.0f / (ext[size_t(i)] * pos_freq[size_t(i)]);
    double mscale = long_ctx ? y.long_mscale : y.short_mscale;
    if (mscale == 0) mscale = y.attention_factor;
    if (mscale == 0) {
      const double factor = double(c.max_position_embeddings) / y.original_max_positions;
      mscale =
          factor <= 1 ? 1.0 : std::sqrt(1 + std::log(factor) / std::log(y.original_max_positions));
    }
    t.scale = float(mscale);
    return t;
  }
  if (!y.yarn) {
    for (int64_t i = 0; i < half; ++i) t.inv_freq[size_t(i)] = 1.0f / pos_freq[size_t(i)];
    if (y.llama3) llama3_scale(y, t.inv_freq);
    return t;
  }
  // transformers 5.17's _compute_yarn_parameters: the factor as written; the correction range
  // from original_max_position_embeddings (else max_position_embeddings). (Some transformers
  // versions recompute the factor as max / original; the 5.17 fixtures say otherwise.)
  const double factor = y.factor;
  const double original =
      y.original_max_positions > 0 ? y.original_max_positions : double(c.max_position_embeddings);
  double attention = y.attention_factor;
  if (attention == 0)
    attention = y.mscale != 0 && y.mscale_all_dim != 0
                    ? yarn_mscale(factor, y.mscale) / yarn_mscale(factor, y.mscale_all_dim)
                    : yarn_mscale(factor);
  t.scale = float(attention);
  // The dimensions whose wavelengths fit the original context keep their frequency
  // (extrapolation), the long ones are interpolated by the factor, with a linear ramp between.
  auto correction_dim = [&](double rotations) {
    return double(dim) * std::log(original / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(double(base)));
  };
  double low = correction_dim(y.beta_fast), high = correction_dim(y.beta_slow);
  if (y.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0), high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp((float(i) - float(low)) / float(high - low), 0.0f, 1.0f);
    const float extrapolation = 1.0f - ramp;
    const float f_extra = 1.0f / pos_freq[size_t(i)];
    const float f_inter = 1.0f / (float(factor) * pos_freq[size_t(i)]);
    t.inv_freq[size_t(i)] = f_inter * (1.0f - extrapolation) + f_extra * extrapolation;
  }
  return t;
}

void rope_head(float* x, int64_t d, const float* cs, const float* sn, bool interleaved) {
  if (!interleaved) return ops::rope_neox(x, d, cs, sn);
  for (int64_t i = 0; i < d / 2; ++i) {
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * cs[i] - b * sn[i];
    x[2 * i + 1] = a * sn[i] + b * cs[i];
  }
}

void rope_row(const RopeTable& t, int64_t pos, float* cos_out, float* sin_out) {
  for (size_t i = 0; i < t.inv_freq.size(); ++i) {
    const float angle = float(pos) * t.inv_freq[i];
    cos_out[i] = std::cos(angle) * t.scale;
    sin_out[i] = std::sin(angle) * t.scale;
  }
}

}  // namespace sy::model
