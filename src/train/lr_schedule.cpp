#include "train/lr_schedule.h"

#include <cmath>
#include <numbers>

#include "util/error.h"

namespace sy::train {

void validate(const LrSchedule& s) {
  if (!(std::isfinite(s.lr_max) && s.lr_max > 0))
    fail("learning rate schedule: lr_max {} must be finite and > 0", s.lr_max);
  if (s.total_steps < 1)
    fail("learning rate schedule: total steps {} must be at least 1", s.total_steps);
  if (s.warmup_steps < 0 || s.warmup_steps > s.total_steps)
    fail("learning rate schedule: warmup steps {} must be in [0, total steps {}]", s.warmup_steps,
         s.total_steps);
  if (!(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1))
    fail("learning rate schedule: min_lr_ratio {} must be in [0, 1]", s.min_lr_ratio);
}

double lr_at(const LrSchedule& s, int64_t step) {
  validate(s);
  if (step < 1 || step > s.total_steps)
    fail("learning rate schedule: step {} is outside [1, {}] (steps count from 1)", step,
         s.total_steps);
  if (step <= s.warmup_steps) return s.lr_max * double(step) / double(s.warmup_steps);
  const double lr_min = s.min_lr_ratio * s.lr_max;
  // Evaluated in the twin's (train_reference.py) order, so both give the same doubles.
  const double angle =
      std::numbers::pi * double(step - s.warmup_steps) / double(s.total_steps - s.warmup_steps);
  return lr_min + 0.5 * (s.lr_max - lr_min) * (1.0 + std::cos(angle));
}

}  // namespace sy::train
