// Keys and values of one sequence, per layer, for incremental decoding. Owned by the caller
// (the model is immutable after loading).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"
#include "util/error.h"

namespace sy::model {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t capacity)
      : capacity_(capacity),
        kv_width_(config.kv_width()),
        k_(size_t(config.num_layers)),
        v_(size_t(config.num_layers)) {
    for (auto& x : k_) x.resize(size_t(capacity * kv_width_));
    for (auto& x : v_) x.resize(size_t(capacity * kv_width_));
  }

  int64_t size() const { return size_; }
  int64_t capacity() const { return capacity_; }
  // [capacity, kv_width] rows; the first size() (plus those being appended) are valid.
  float* keys(int layer) { return k_[size_t(layer)].data(); }
  float* values(int layer) { return v_[size_t(layer)].data(); }
  const float* keys(int layer) const { return k_[size_t(layer)].data(); }
  const float* values(int layer) const { return v_[size_t(layer)].data(); }

  // Called by the forward pass after all layers have appended n positions.
  void advance(int64_t n) {
    SY_ASSERT(size_ + n <= capacity_);
    size_ += n;
  }
  void clear() { size_ = 0; }

 private:
  int64_t capacity_;
  int64_t kv_width_;
  int64_t size_ = 0;
  std::vector<std::vector<float>> k_, v_;
};

// New tokens of one sequence, appended at positions cache->size() ...
struct SequenceChunk {
  KvCache* cache = nullptr;
  std::span<const int32_t> tokens;
};

}  // namespace sy::model
