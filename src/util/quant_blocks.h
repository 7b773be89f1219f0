// ggml's block-quantized formats, scalar reference code written from the format definitions
// (ggml-common.h block layouts, ggml-quants.c arithmetic order, so results are bit-exact):
//   Q8_0  32 values: f16 d, i8 q[32];                       x = q d
//   Q4_0  32 values: f16 d, u8 q[16] (low nibbles first);   x = (q - 8) d
//   Q4_K  256 values: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of
//         32, u8 q[128];                                    x = d sc q - dmin m
//   Q6_K  256 values: u8 ql[128], u8 qh[64], i8 scales[16], f16 d;  x = d sc (q - 32)
//   MXFP4 32 values: u8 e (E8M0), u8 q[16] (E2M1 codes);    x = 2^(e - 128) * 2 fp4(q)
// Quantizers for Q8_0, Q4_0 and MXFP4 follow ggml's reference rounding; Q4_K and Q6_K fit each
// sub-block's range directly (valid blocks; not ggml's iterative scale search).
#pragma once

#include <cstdint>

#include "util/dtype.h"
#include "util/ggml_types.h"

namespace sy {

// True for the types dequantize_row handles (F32, F16 and BF16 included).
bool can_dequantize(GgmlType t);
// n values (a multiple of the type's block) from src to dst.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

// The ggml type of a block DType (Q8_0, Q4_0, Q4_K, Q6_K, MXFP4).
GgmlType ggml_block_type(DType t);

// Q4_K sub-block j's (0..7) 6-bit scale and min from a block's 12 packed bytes (ggml's
// get_scale_min_k4).
void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m);

bool can_quantize(GgmlType t);  // Q8_0, Q4_0, Q4_K, Q6_K, MXFP4 (and F32 / F16 / BF16)
// n values (a multiple of the type's block) from src into blocks at dst.
void quantize_row(GgmlType t, const float* src, void* dst, int64_t n);

}  // namespace sy
