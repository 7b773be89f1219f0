#include "train/expert_parallel_train.h"

#include <cstring>

#include "util/error.h"

namespace sy::train {

namespace {

moe::Placement rank_placement(int num_experts, int num_ranks) {
  if (num_ranks > num_experts)
    fail(
        "expert parallelism needs at least one expert per rank: {} ranks for {} experts "
        "(use at most {} ranks)",
        num_ranks, num_experts, num_experts);
  return moe::Placement::contiguous(num_experts, num_ranks);
}

}  // namespace

ExpertParallelCompute::ExpertParallelCompute(const parallel::Communicator& comm, int num_experts,
                                             parallel::EpOptions options)
    : comm_(comm),
      placement_(rank_placement(num_experts, comm.size())),
      trips_(comm, placement_, options) {
  const std::vector<int32_t>& mine = placement_.experts_on(comm.rank());
  first_ = mine.front();
  num_mine_ = int(mine.size());
}

ExpertParallelCompute::Layer& ExpertParallelCompute::layer_of(int layer) {
  if (int(layers_.size()) <= layer) layers_.resize(size_t(layer + 1));
  return layers_[size_t(layer)];
}

moe::ExchangeEstimate ExpertParallelCompute::estimate(int layer) const {
  return layer < int(layers_.size()) ? layers_[size_t(layer)].fwd_estimate
                                     : moe::ExchangeEstimate{};
}

moe::ExchangeEstimate ExpertParallelCompute::backward_estimate(int layer) const {
  return layer < int(layers_.size()) ? layers_[size_t(layer)].bwd_estimate
                                     : moe::ExchangeEstimate{};
}

void ExpertParallelCompute::start(const moe::MoeBlock& block, int layer,
                                  const std::vector<int64_t>& offsets, const float* xe, int64_t H,
                                  float* ye) {
  const int E = placement_.num_experts(), n = comm_.size();
  Layer& L = layer_of(layer);
  L.block = &block;
  L.out = ye;
  L.hidden = H;
  parallel::RoundTrip& trip = trips_.prepare(layer, H);
  // Rows come grouped by expert and a contiguous placement gives each rank ascending,
  // consecutive experts: peer q's rows are one block of xe, sent as they are.
  trip.send_counts.assign(size_t(n) * size_t(E), 0);
  trip.send_rows.assign(size_t(n), 0);
  for (int q = 0; q < n; ++q)
    for (int32_t e : placement_.experts_on(q)) {
      const int64_t rows = offsets[size_t(e + 1)] - offsets[size_t(e)];
      trip.send_counts[size_t(q) * E + size_t(e)] = rows;
      trip.send_rows[size_t(q)] += rows;
    }
  trip.send_from = xe;
  trips_.launch(trip, false);
}

void ExpertParallelCompute::compute(int layer) {
  const int E = placement_.num_experts(), n = comm_.size();
  Layer& L = layers_.at(size_t(layer));
  parallel::RoundTrip& trip = trips_.await_rows(layer);
  const int64_t H = trip.width;
  L.recv_counts = trip.recv_counts;
  L.send_rows = trip.send_rows;
  L.recv_rows = trip.recv_rows;

  // Peer-major (each peer's rows grouped by my experts) -> expert-major.
  const int e0 = first_, e1 = first_ + num_mine_, mine = num_mine_;
  L.local_offsets.assign(size_t(mine + 1), 0);
  for (int q = 0; q < n; ++q)
    for (int e = e0; e < e1; ++e)
      L.local_offsets[size_t(e - e0 + 1)] += L.recv_counts[size_t(q) * E + e];
  for (int i = 0; i < mine; ++i) L.local_offsets[size_t(i + 1)] += L.local_offsets[size_t(i)];
  const int64_t R = L.local_offsets[size_t(mine)];
  L.perm.resize(size_t(R));
  std::vector<int64_t> fill(L.local_offsets.begin(), L.local_offsets.end() - 1);
  int64_t row = 0;
  for (int q = 0; q < n; ++q)
    for (int e = e0; e < e1; ++e)
      for (int64_t k = 0; k < L.recv_counts[size_t(q) * E + e]; ++k)
        L.perm[size_t(row++)] = fill[size_t(e - e0)]++;
  L.xloc.resize(size_t(R * H));
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(L.xloc.data() + L.perm[size_t(i)] * H, trip.recv.data() + i * H, size_t(H) * 4);

  grouped_out_.resize(size_t(R * H));
  L.act.resize(size_t(mine));
  for (int i = 0; i < mine; ++i) {
    const int64_t r0 = L.local_offsets[size_t(i)], m = L.local_offsets[size_t(i + 1)] - r0;
    if (m == 0) continue;
    L.act[size_t(i)].keep = true;
    moe::ffn_forward(L.block->experts[size_t(e0 + i)], L.xloc.data() + r0 * H, m,
                     grouped_out_.data() + r0 * H, L.act[size_t(i)]);
  }
  trip.results.resize(size_t(R * H));
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(trip.results.data() + i * H, grouped_out_.data() + L.perm[size_t(i)] * H,
                size_t(H) * 4);
  trips_.send_results(trip);
}

void ExpertParallelCompute::complete(int layer, moe::ExchangeEstimate& estimate) {
  Layer& L = layers_.at(size_t(layer));
  parallel::RoundTrip& trip = trips_.await_results(layer);
  if (!trip.back.empty()) std::memcpy(L.out, trip.back.data(), trip.back.size() * 4);
  timing_.comm_s += trip.dispatch_comm_seconds() + trip.home_comm_seconds();
  timing_.exposed_s += trip.blocked_dispatch_s + trip.blocked_home_s;
  timing_.calls += 1;
  timing_.remote_bytes += trip.remote_bytes(comm_.rank());
  parallel::update_estimate(estimate, trip);
  trips_.release(trip);
}

void ExpertParallelCompute::finish(int layer) {
  complete(layer, layers_.at(size_t(layer)).fwd_estimate);
}

void ExpertParallelCompute::backward_start(const MoeParams& p, int layer, const float* dye,
                                           float* dxe) {
  Layer& L = layers_.at(size_t(layer));
  L.params = &p;
  L.out = dxe;
  // The output gradients retrace the forward's rows: same peers, same counts.
  parallel::RoundTrip& trip = trips_.prepare(layer, L.hidden);
  trip.send_rows = L.send_rows;
  trip.recv_rows = L.recv_rows;
  trip.send_from = dye;
  trips_.launch(trip, true);
}

void ExpertParallelCompute::backward_compute(int layer) {
  Layer& L = layers_.at(size_t(layer));
  parallel::RoundTrip& trip = trips_.await_rows(layer);
  const int64_t H = L.hidden, R = L.local_offsets[size_t(num_mine_)];
  grouped_.resize(size_t(R * H));
  grouped_out_.resize(size_t(R * H));
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(grouped_.data() + L.perm[size_t(i)] * H, trip.recv.data() + i * H, size_t(H) * 4);
  for (int i = 0; i < num_mine_; ++i) {
    const int64_t r0 = L.local_offsets[size_t(i)], m = L.local_offsets[size_t(i + 1)] - r0;
    if (m > 0)
      ffn_train_backward(L.params->experts[size_t(first_ + i)], L.xloc.data() + r0 * H, m,
                         L.act[size_t(i)], grouped_.data() + r0 * H, grouped_out_.data() + r0 * H,
                         false, scratch_);
  }
  trip.results.resize(size_t(R * H));
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(trip.results.data() + i * H, grouped_out_.data() + L.perm[size_t(i)] * H,
                size_t(H) * 4);
  trips_.send_results(trip);
}

void ExpertParallelCompute::backward_finish(int layer) {
  complete(layer, layers_.at(size_t(layer)).bwd_estimate);
}

}  // namespace sy::train
