// The low-precision copies of the experts a device is about to run (ReaLB, precision_policy.h):
// converted from the stored weights at run time, layer by layer, into buffers that the next
// layer's conversion reuses, so they never hold more than one layer's experts of one device.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "moe/expert_ffn.h"
#include "moe/precision_policy.h"

namespace sy::moe {

// Refuses (sy::Error, naming the expert and why) a format the experts' shapes cannot take:
// q4 needs rows of whole 32-value blocks.
void check_low_format(LowFormat format, const FfnWeights& expert);

class LowPrecisionExperts {
 public:
  // An expert's weights in `format`, valid (the reference too) until the next begin();
  // `threads` convert.
  const FfnWeights& convert(const FfnWeights& src, LowFormat format, int threads);
  // Forgets the previous layer's conversions (their buffers are reused).
  void begin() { used_ = 0; }
  // Bytes held by the conversions since begin().
  size_t bytes() const;

 private:
  struct Slot {
    std::vector<uint8_t> gate, up, down;
    // q4: the same rows repacked for the int8 kernels (ops/repack.h), 64-byte aligned inside.
    std::vector<uint8_t> gate_packed, up_packed, down_packed;
    FfnWeights view;
  };
  std::deque<Slot> slots_;  // a deque: views handed out stay put as slots are added
  size_t used_ = 0;
};

}  // namespace sy::moe
