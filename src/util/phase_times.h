// Wall time per named phase, summed over calls (training's `--profile`, the layer stack's
// forward phases). A null sink costs one branch per phase.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace sy {

// Seconds of wall time since `t0`.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class PhaseTimes {
 public:
  void add(const char* phase, double seconds);
  // Rows "phase  ms per step  share", in first-seen order.
  std::string table(int steps) const;
  const std::vector<std::pair<std::string, double>>& phases() const { return phases_; }
  double seconds(const std::string& phase) const {
    for (const auto& [name, s] : phases_)
      if (name == phase) return s;
    return 0;
  }

 private:
  std::vector<std::pair<std::string, double>> phases_;
};

// Adds the time from construction to destruction to `profile` (if not null).
class PhaseTimer {
 public:
  PhaseTimer(PhaseTimes* profile, const char* phase)
      : profile_(profile), phase_(phase), t0_(std::chrono::steady_clock::now()) {}
  ~PhaseTimer() { stop(); }
  void stop() {
    if (profile_) profile_->add(phase_, seconds_since(t0_));
    profile_ = nullptr;
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  PhaseTimes* profile_;
  const char* phase_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace sy
