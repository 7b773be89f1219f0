// Offloaded routed experts (SpecMoEOff's setting, papers.md section 5, on CPU: RAM is the fast
// memory, the checkpoint's storage the slow one): expert weights stay in the checkpoint files
// and are read on demand into a cache bounded by a byte budget, least recently used first out.
// Reads bypass the page cache (io/direct_reader.h), so they cost what the storage costs.
//
// An I/O thread streams ahead: when a layer's routed experts start, the experts it needs are
// queued in the order they will run (reading expert i + 1 while expert i computes), followed,
// when the layer needs at least half of its experts (the large-batch regime), by every expert
// of the next MoE layer (its router has not run yet; such a batch needs most of them). Streaming
// never evicts an expert the current layer still needs, nor one it streamed that has not been used
// yet; what it streamed and evicted unused is reported as waste.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "io/direct_reader.h"
#include "moe/expert_ffn.h"

namespace sy::moe {

// Where one matrix of an offloaded expert lives: its shape and dtype (data == nullptr) and its
// bytes in a file.
struct OffloadedMatrix {
  ops::WeightView shape;
  std::string file;
  uint64_t offset = 0;
};
struct OffloadedExpert {
  OffloadedMatrix gate, up, down;
  size_t bytes() const { return gate.shape.bytes() + up.shape.bytes() + down.shape.bytes(); }
};

struct OffloadConfig {
  size_t budget_bytes = 0;  // the cache's size; at least one expert
  double cap_gbps = 0;      // EMULATED read bandwidth cap (0: the storage's own)
  bool stream_ahead = true;
};

struct OffloadStats {
  int64_t requests = 0, hits = 0;  // acquire() calls; those that found the expert resident
  int64_t streamed = 0;            // experts the I/O thread read ahead
  int64_t streamed_unused = 0;     // of those, evicted before any use (waste)
  uint64_t bytes_read = 0;         // from storage, all threads
  double read_s = 0;               // time spent in reads, all threads
  double stall_s = 0;              // compute waited for a read (exposed I/O)
};

class ExpertCache {
 public:
  // experts[layer]: the MoE layer's experts (empty for dense layers).
  ExpertCache(std::vector<std::vector<OffloadedExpert>> experts, const OffloadConfig& config);
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  // A layer's routed experts are about to run `needed`, in this order: stream them, then the
  // next MoE layer's.
  void begin_layer(int layer, std::span<const int> needed);
  // The expert's weights, read now if no read is under way; valid until release().
  const FfnWeights& acquire(int layer, int expert);
  void release(int layer, int expert);

  OffloadStats stats() const;
  size_t budget_bytes() const { return config_.budget_bytes; }
  size_t expert_bytes_total() const { return total_bytes_; }
  const char* read_mode() const { return reader_.mode(); }
  double cap_gbps() const { return config_.cap_gbps; }

 private:
  enum class State : uint8_t { kEmpty, kLoading, kReady };
  struct FreeBytes {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  // An expert's three matrices, each read in place into its own page-aligned region.
  struct Storage {
    std::unique_ptr<uint8_t, FreeBytes> bytes;
    size_t size = 0;
  };
  struct Entry {
    State state = State::kEmpty;
    Storage storage;
    FfnWeights weights;
    int pins = 0;
    uint64_t last_use = 0;
    bool streamed = false, used = false;
  };
  Entry& entry(int layer, int expert);
  bool make_room(size_t bytes, bool for_stream, std::unique_lock<std::mutex>& lock);
  Storage take_storage(size_t size);  // a recycled buffer of that size, else a new one
  void load(int layer, int expert, std::unique_lock<std::mutex>& lock);
  void io_loop();

  std::vector<std::vector<OffloadedExpert>> experts_;
  std::vector<std::vector<Entry>> entries_;
  OffloadConfig config_;
  io::DirectReader reader_;
  size_t total_bytes_ = 0, resident_bytes_ = 0;
  int current_layer_ = -1;
  std::vector<int> current_needed_;
  uint64_t clock_ = 0, layer_start_ = 0;
  OffloadStats stats_;
  std::exception_ptr error_;  // a failed read-ahead, rethrown to the compute thread
  // Evicted experts' buffers, reused by the next reads: a fresh buffer faults in every page.
  std::vector<Storage> spare_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::pair<int, int>> queue_;
  bool stop_ = false;
  std::thread io_;
};

}  // namespace sy::moe
