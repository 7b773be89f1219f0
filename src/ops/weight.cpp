#include "ops/weight.h"

#include "ops/repack.h"

namespace sy::ops {

WeightView WeightView::slice_rows(int64_t begin, int64_t count) const {
  WeightView v{dtype, count, cols, row(begin)};
  if (packed && begin % kPackRows == 0)
    v.packed = static_cast<const uint8_t*>(packed) +
               size_t(begin / kPackRows) * packed_group_bytes(dtype, cols);
  return v;
}

}  // namespace sy::ops
