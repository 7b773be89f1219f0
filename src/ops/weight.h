// A read-only view of a row-major weight matrix as stored in a checkpoint:
// [rows, cols] = Hugging Face nn.Linear [out_features, in_features]; y = W x.
#pragma once

#include <cstdint>

#include "util/dtype.h"

namespace sy::ops {

struct WeightView {
  DType dtype = DType::F32;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
  const void* data = nullptr;
  // The same rows repacked for the int8 kernels (ops/repack.h), or null. Copies of a view
  // share it; a view whose data is replaced must reset it.
  const void* packed = nullptr;

  size_t row_bytes() const { return dtype_bytes(dtype, cols); }
  size_t bytes() const { return size_t(rows) * row_bytes(); }
  const void* row(int64_t r) const {
    return static_cast<const uint8_t*>(data) + size_t(r) * row_bytes();
  }
  // Rows [begin, begin + count) as their own view (e.g. gate half of a fused gate_up).
  // The repacked copy follows when begin starts one of its 16-row groups.
  WeightView slice_rows(int64_t begin, int64_t count) const;
};

}  // namespace sy::ops
