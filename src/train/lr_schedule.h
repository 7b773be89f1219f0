// The learning-rate schedule of the trainer: linear warmup to lr_max, then cosine decay to
// lr_min = min_lr_ratio * lr_max at the last step (as tests/reference/train_reference.py).
#pragma once

#include <cstdint>

namespace sy::train {

struct LrSchedule {
  double lr_max = 3e-3;
  int64_t warmup_steps = 0;   // 0 .. total_steps
  int64_t total_steps = 1;    // >= 1
  double min_lr_ratio = 0.1;  // in [0, 1]
};

// sy::Error naming the bad field (lr_max not finite and > 0, warmup outside [0, total], ...).
void validate(const LrSchedule& schedule);

// lr of 1-based step s in [1, total_steps]:
//   lr_max * s / warmup                                                   if s <= warmup
//   lr_min + 0.5 * (lr_max - lr_min) * (1 + cos(pi * (s - warmup) / (total - warmup)))  otherwise
// Validates the schedule and the step (sy::Error).
double lr_at(const LrSchedule& schedule, int64_t step);

}  // namespace sy::train
