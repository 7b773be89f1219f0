// Where the routed experts run. moe_forward routes and applies the capacity policy, then hands
// the surviving (token, expert) pairs to a backend: without one every expert runs in this
// process; the expert-parallel one (parallel/) sends rows to the ranks that own the experts by
// all-to-all, and brings the results back. Either way the routed branch is three steps --
// start (dispatch begins), compute (the experts run), finish (outputs combined) -- so that a
// caller can run other operators between them while the exchanges are in flight (ScMoE).
#pragma once

#include <cstdint>
#include <vector>

#include "moe/expert_ffn.h"

namespace sy::moe {

struct MoeBlock;
struct MoeScratch;

struct RoutedPairs {
  int layer = 0;
  int64_t num_tokens = 0;
  int64_t hidden = 0;
  int slots = 0;                   // pairs per token
  const float* x = nullptr;        // [T, H] normalised input
  const int32_t* ids = nullptr;    // [T, slots], kDroppedExpert = no pair
  const float* weights = nullptr;  // [T, slots]
  double route_seconds = 0;        // time moe_forward spent routing + applying the policy
  const uint8_t* tags = nullptr;   // [T] modality tags (ReaLB), or nullptr: none
};

// What a backend has measured of a layer's exchanges (seconds per call, running averages): the
// operator scheduler's T_dispatch and T_combine. Zero when unknown or in-process.
struct ExchangeEstimate {
  double dispatch_s = 0, combine_s = 0;
  bool known = false;
};

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  // Collective for distributed backends: every rank calls start, compute and finish once per
  // MoE layer call, in that order, even with zero tokens. Calls of different layers may
  // interleave (at most two in flight, of layers with different parity).
  // start: the pairs' rows begin their way to the experts' owners (`pairs.x` and `scratch`
  // stay alive until finish).
  virtual void start(const MoeBlock& block, const RoutedPairs& pairs, MoeScratch& scratch) = 0;
  // Drives the layer's exchanges in flight (cheap; called between other operators).
  virtual void progress(int layer) { (void)layer; }
  // Waits for the rows, runs this process's experts on them, starts the outputs home.
  virtual void compute(int layer) = 0;
  // Waits for the outputs: out [T, H] += sum over pairs of weight * expert(x).
  virtual void finish(int layer, float* out) = 0;
  virtual ExchangeEstimate estimate(int layer) const {
    (void)layer;
    return {};
  }
  // True when the exchanges block where they start: the caller then runs the experts right
  // after start (slot 0) on every rank, so blocking collectives of two layers in flight can
  // never be entered in different orders by different ranks.
  virtual bool blocking() const { return false; }
  // The operator slot the layer's experts ran at this call, of `slots` + 1 (for reports).
  virtual void note_slot(int layer, int slot, int slots) { (void)layer, (void)slot, (void)slots; }

  // All three steps at once.
  void run(const MoeBlock& block, const RoutedPairs& pairs, MoeScratch& scratch, float* out) {
    start(block, pairs, scratch);
    compute(pairs.layer);
    finish(pairs.layer, out);
  }
};

// Runs the routed experts over rows grouped by expert: ye = expert_e(xe) on the rows
// [offsets[e], offsets[e + 1]) of each expert e. Training's experts (which record what their
// backward needs, and under expert parallelism own some experts each) run through this, in the
// same three steps as a backend: start (the rows leave for where they run), compute, finish (ye
// holds the outputs); collective under expert parallelism. xe, offsets and ye stay alive
// until finish.
class GroupedExperts {
 public:
  virtual ~GroupedExperts() = default;
  virtual void start(const MoeBlock& block, int layer, const std::vector<int64_t>& offsets,
                     const float* xe, int64_t hidden, float* ye) = 0;
  virtual void progress(int layer) { (void)layer; }
  virtual void compute(int layer) = 0;
  virtual void finish(int layer) { (void)layer; }
  // As ExpertBackend's: measured exchange times, and whether the exchanges block.
  virtual ExchangeEstimate estimate(int layer) const {
    (void)layer;
    return {0, 0, true};  // in-process: nothing to hide
  }
  virtual bool blocking() const { return false; }
};

}  // namespace sy::moe
