// Keys and values of one sequence, per layer, for incremental decoding. Owned by the caller
// (the model is immutable after loading).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"
#include "util/error.h"
#include "util/memory.h"

namespace sy::model {

class KvCache {
 public:
  // capacity: the most positions the sequence may reach, at most the model's
  // max_position_embeddings (sy::Error otherwise). Memory grows with the sequence (doubling),
  // so a large capacity costs nothing until it is used.
  KvCache(const ModelConfig& config, int64_t capacity)
      : capacity_(capacity),
        k_width_(config.cache_key_width()),
        v_width_(config.cache_value_width()),
        k_(size_t(config.num_layers)),
        v_(size_t(config.num_layers)) {
    if (capacity < 1 || capacity > config.max_position_embeddings)
      fail(
          "a context of {} positions is outside what the model supports (1 .. {}, its "
          "max_position_embeddings)",
          capacity, config.max_position_embeddings);
  }

  int64_t size() const { return size_; }
  int64_t capacity() const { return capacity_; }
  // Makes room for n more positions: the forward pass calls it before appending. sy::Error
  // when that passes the capacity or the memory available.
  void reserve_more(int64_t n) {
    if (n < 0 || size_ + n > capacity_)
      fail("context full: {} cached + {} new tokens exceed the KV cache capacity of {}", size_, n,
           capacity_);
    if (size_ + n <= allocated_) return;
    const int64_t rows = std::min(capacity_, std::max({size_ + n, 2 * allocated_, int64_t(64)}));
    const uint64_t per_row = uint64_t(k_.size()) * uint64_t(k_width_ + v_width_) * 4;
    const uint64_t bytes = uint64_t(rows) * per_row;
    require_memory(
        bytes - uint64_t(allocated_) * per_row,
        fmt::format("the KV cache for {} positions ({} in all)", rows, format_bytes(bytes)));
    for (auto& x : k_) x.resize(size_t(rows * k_width_));
    for (auto& x : v_) x.resize(size_t(rows * v_width_));
    allocated_ = rows;
  }
  // [allocated rows, cache_key_width / cache_value_width]; the first size() (plus those being
  // appended) are valid. MLA keeps its latent rows in keys() and no values.
  float* keys(int layer) { return k_[size_t(layer)].data(); }
  float* values(int layer) { return v_[size_t(layer)].data(); }
  const float* keys(int layer) const { return k_[size_t(layer)].data(); }
  const float* values(int layer) const { return v_[size_t(layer)].data(); }

  // Called by the forward pass after all layers have appended n positions.
  void advance(int64_t n) {
    SY_ASSERT(size_ + n <= allocated_);
    size_ += n;
  }
  void clear() { size_ = 0; }
  // Forgets every position from n on (speculative decoding's rejected draft tokens); the next
  // forward overwrites them.
  void truncate(int64_t n) {
    SY_ASSERT(n >= 0 && n <= size_);
    size_ = n;
  }

 private:
  int64_t capacity_;
  int64_t k_width_, v_width_;
  int64_t size_ = 0;
  int64_t allocated_ = 0;  // rows held by each buffer
  std::vector<std::vector<float>> k_, v_;
};

// New tokens of one sequence, appended at positions cache->size() ...
struct SequenceChunk {
  KvCache* cache = nullptr;
  std::span<const int32_t> tokens;
};

}  // namespace sy::model
