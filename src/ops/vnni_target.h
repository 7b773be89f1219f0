// What the AVX-512 VNNI kernel files share: the target attribute their functions carry (the
// rest of the build targets the baseline; int8_dot_enabled() checks the CPU at run time), and
// <immintrin.h> without GCC 12's false warnings (its own _mm512_undefined_* placeholders,
// inside reduce / insert / convert, read as uninitialized). Include it first, in .cpp files only.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define SY_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c")))
