// One place that owns the thread count of OpenMP and OpenBLAS.
#pragma once

namespace sy::ops {

void set_num_threads(int n);  // n <= 0: all cores
int num_threads();

}  // namespace sy::ops
