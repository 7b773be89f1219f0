#include "moe/expert_cache.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "util/error.h"
#include "util/memory.h"
#include "util/phase_times.h"

namespace sy::moe {

namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

ExpertCache::ExpertCache(std::vector<std::vector<OffloadedExpert>> experts,
                         const OffloadConfig& config)
    : experts_(std::move(experts)), config_(config), reader_(config.cap_gbps) {
  size_t largest = 0;
  for (const auto& layer : experts_) {
    entries_.emplace_back(layer.size());
    for (const OffloadedExpert& e : layer) {
      total_bytes_ += e.bytes();
      largest = std::max(largest, e.bytes());
    }
  }
  if (config_.budget_bytes < largest)
    fail(
        "--expert-cache-mb {:.2f} cannot hold one expert ({} each): give at least {:.2f} MB, or "
        "leave the experts resident",
        double(config_.budget_bytes) / 1e6, format_bytes(largest), double(largest) / 1e6 + 0.005);
  io_ = std::thread([this] { io_loop(); });
}

ExpertCache::~ExpertCache() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  io_.join();
}

ExpertCache::Entry& ExpertCache::entry(int layer, int expert) {
  return entries_[size_t(layer)][size_t(expert)];
}

// Frees `bytes` of the budget by evicting the least recently used unpinned experts. The I/O
// thread's read-ahead may not evict what the current layer has yet to run, nor what it read
// ahead that nobody used yet; false when it cannot make room. The compute thread waits for
// pins to go or reads to land instead.
bool ExpertCache::make_room(size_t bytes, bool for_stream, std::unique_lock<std::mutex>& lock) {
  while (resident_bytes_ + bytes > config_.budget_bytes) {
    Entry* victim = nullptr;
    size_t victim_bytes = 0;
    for (size_t l = 0; l < entries_.size(); ++l)
      for (size_t e = 0; e < entries_[l].size(); ++e) {
        Entry& x = entries_[l][e];
        if (x.state != State::kReady || x.pins > 0) continue;
        if (for_stream) {
          const bool pending_here = int(l) == current_layer_ && x.last_use <= layer_start_ &&
                                    std::find(current_needed_.begin(), current_needed_.end(),
                                              int(e)) != current_needed_.end();
          if (pending_here || (x.streamed && !x.used)) continue;
        }
        if (!victim || x.last_use < victim->last_use) {
          victim = &x;
          victim_bytes = experts_[l][e].bytes();
        }
      }
    if (!victim) {
      if (for_stream) return false;
      changed_.wait(lock);
      continue;
    }
    if (victim->streamed && !victim->used) ++stats_.streamed_unused;
    if (spare_.size() < 2) spare_.push_back(std::move(victim->storage));
    victim->storage = {};
    victim->state = State::kEmpty;
    victim->streamed = victim->used = false;
    resident_bytes_ -= victim_bytes;
  }
  return true;
}

ExpertCache::Storage ExpertCache::take_storage(size_t size) {
  for (Storage& s : spare_)
    if (s.size == size) {
      Storage out = std::move(s);
      std::swap(s, spare_.back());
      spare_.pop_back();
      return out;
    }
  Storage out;
  out.bytes.reset(static_cast<uint8_t*>(std::aligned_alloc(io::DirectReader::kAlign, size)));
  if (!out.bytes) fail("cannot allocate {} bytes for an offloaded expert", size);
  out.size = size;
  return out;
}

// Reads an expert whose budget is reserved; the lock is released during the read.
void ExpertCache::load(int layer, int expert, std::unique_lock<std::mutex>& lock) {
  Entry& x = entry(layer, expert);
  const OffloadedExpert& src = experts_[size_t(layer)][size_t(expert)];
  const OffloadedMatrix* matrices[] = {&src.gate, &src.up, &src.down};
  size_t region[3], size = 0;
  for (int i = 0; i < 3; ++i) {
    region[i] = io::DirectReader::in_place_bytes(matrices[i]->offset, matrices[i]->shape.bytes());
    size += region[i];
  }
  x.state = State::kLoading;
  resident_bytes_ += src.bytes();
  Storage storage = take_storage(size);
  lock.unlock();
  const auto t0 = Clock::now();
  const uint8_t* data[3] = {};
  std::exception_ptr error;
  try {
    uint8_t* p = storage.bytes.get();
    for (int i = 0; i < 3; ++i) {
      data[i] = reader_.read_in_place(matrices[i]->file, matrices[i]->offset,
                                      matrices[i]->shape.bytes(), p);
      p += region[i];
    }
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  stats_.read_s += seconds_since(t0);
  if (error) {
    x.state = State::kEmpty;
    resident_bytes_ -= src.bytes();
    error_ = error;
    changed_.notify_all();
    std::rethrow_exception(error);
  }
  stats_.bytes_read += src.bytes();
  x.storage = std::move(storage);
  x.weights.gate = src.gate.shape;
  x.weights.gate.data = data[0];
  x.weights.up = src.up.shape;
  x.weights.up.data = data[1];
  x.weights.down = src.down.shape;
  x.weights.down.data = data[2];
  x.state = State::kReady;
  changed_.notify_all();
}

void ExpertCache::begin_layer(int layer, std::span<const int> needed) {
  {
    std::lock_guard lock(mutex_);
    current_layer_ = layer;
    current_needed_.assign(needed.begin(), needed.end());
    layer_start_ = clock_;
    queue_.clear();
    if (!config_.stream_ahead) return;
    for (int e : needed)
      if (entry(layer, e).state == State::kEmpty) queue_.emplace_back(layer, e);
    // The next MoE layer (the first again after the last: the next forward call), when this
    // layer needs at least half its experts: a batch that large will likely need most of the
    // next layer's too, while a small one would mostly read experts nobody runs.
    const int L = int(experts_.size());
    const bool large = 2 * needed.size() >= experts_[size_t(layer)].size();
    for (int i = 1; i <= L && large; ++i) {
      const int next = (layer + i) % L;
      if (experts_[size_t(next)].empty()) continue;
      if (next != layer)
        for (int e = 0; e < int(experts_[size_t(next)].size()); ++e)
          if (entry(next, e).state == State::kEmpty) queue_.emplace_back(next, e);
      break;
    }
  }
  changed_.notify_all();
}

const FfnWeights& ExpertCache::acquire(int layer, int expert) {
  std::unique_lock lock(mutex_);
  ++stats_.requests;
  Entry& x = entry(layer, expert);
  const auto t0 = Clock::now();
  if (x.state == State::kReady) {
    ++stats_.hits;
  } else {
    if (error_) std::rethrow_exception(error_);  // the I/O thread's read failed
    changed_.wait(lock, [&] { return x.state != State::kLoading || error_; });
    if (error_) std::rethrow_exception(error_);
    if (x.state == State::kEmpty) {  // not read ahead: read it here
      std::erase(queue_, std::make_pair(layer, expert));
      make_room(experts_[size_t(layer)][size_t(expert)].bytes(), false, lock);
      load(layer, expert, lock);
    }
    stats_.stall_s += seconds_since(t0);
  }
  ++x.pins;
  x.used = true;
  x.last_use = ++clock_;
  return x.weights;
}

void ExpertCache::release(int layer, int expert) {
  {
    std::lock_guard lock(mutex_);
    Entry& x = entry(layer, expert);
    SY_ASSERT(x.pins > 0);
    --x.pins;
  }
  changed_.notify_all();
}

void ExpertCache::io_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || (!queue_.empty() && !error_); });
    if (stop_) return;
    const auto [layer, expert] = queue_.front();
    if (entry(layer, expert).state != State::kEmpty) {
      queue_.pop_front();
      continue;
    }
    if (!make_room(experts_[size_t(layer)][size_t(expert)].bytes(), true, lock)) {
      changed_.wait(lock);  // no room yet: wait for a use, a release or a new layer
      continue;
    }
    queue_.pop_front();
    entry(layer, expert).streamed = true;
    ++stats_.streamed;
    try {
      load(layer, expert, lock);
    } catch (...) {  // kept in error_ for the compute thread
    }
  }
}

OffloadStats ExpertCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace sy::moe
