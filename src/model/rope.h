// Rotary position embedding tables for a model: the inverse frequencies of its rotary part
// (default RoPE, or YaRN's blend of interpolated and extrapolated frequencies) and the factor
// transformers multiplies cos and sin by (YaRN's attention factor; 1 otherwise), computed in
// float32 as transformers does.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace sy::model {

struct RopeTable {
  std::vector<float> inv_freq;  // [rope_dim / 2]
  float scale = 1.0f;           // on cos and sin
};

// seq_len: the largest position of the forward call + 1 (LongRoPE picks its factors by it).
RopeTable rope_table(const ModelConfig& config, int64_t seq_len = 0);

// cos / sin of pos * inv_freq[i], times the table's scale: [rope_dim / 2] each.
void rope_row(const RopeTable& table, int64_t pos, float* cos_out, float* sin_out);

// Rotates one head's first d values by the row's angles: NeoX halves (i, i + d/2), or
// interleaved pairs (2i, 2i + 1) (DeepSeek's complex-number form, ERNIE's rotate_every_two).
void rope_head(float* x, int64_t d, const float* cos, const float* sin, bool interleaved);

// YaRN's mscale for a scaling factor: 0.1 * mscale * ln(factor) + 1 (1 when factor <= 1).
double yarn_mscale(double factor, double mscale = 1.0);

}  // namespace sy::model
