#include "train/allocator.h"

#include <malloc.h>

#include <limits>

namespace sy::train {

void keep_freed_memory() {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  mallopt(M_TOP_PAD, 256 << 20);  // grow the heap in big steps
}

}  // namespace sy::train
