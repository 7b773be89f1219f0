// NVFP4 emulation (the format ReaLB computes its hot ranks' experts in on Blackwell GPUs):
// E2M1 values (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives) in blocks of 16, each block
// scaled by an FP8 E4M3 factor, the whole tensor by one FP32 factor chosen so that the largest
// block scale fits E4M3 (max 448): global = max|x| / (6 * 448). This CPU has no FP4 arithmetic,
// so values are rounded onto the format's grid and kept in float32 ("fake quantization"): the
// accuracy of the format is studied, not its speed.
#pragma once

#include <cstdint>

namespace sy {

// Nearest E4M3 (FN: no infinities, max 448) value to v >= 0, ties to even; saturates at 448.
float round_e4m3(float v);
// Nearest E2M1 value to v (sign kept), ties to even; saturates at +-6.
float round_e2m1(float v);

// out[i] = x[i] on the NVFP4 grid: blocks of 16 consecutive values (a shorter last block when n
// is not a multiple of 16) over one tensor of n values. out may equal x.
void nvfp4_fake_quantize(const float* x, int64_t n, float* out);

// The same on `rows` rows of `cols` values (row stride ld): one global scale for them all,
// blocks of 16 within each row.
void nvfp4_fake_quantize_rows(const float* x, int64_t rows, int64_t cols, int64_t ld, float* out,
                              int64_t ld_out);

}  // namespace sy
