#include "parallel/expert_parallel.h"

#include <chrono>
#include <cstring>

#include "util/error.h"

namespace sy::parallel {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ExpertParallelBackend::ExpertParallelBackend(const Communicator& comm, moe::Placement placement,
                                             int num_layers, bool nonblocking)
    : comm_(comm),
      placement_(std::move(placement)),
      nonblocking_(nonblocking),
      timings_(size_t(num_layers)) {
  SY_ASSERT(!placement_.empty() && placement_.num_devices() == comm.size());
}

void ExpertParallelBackend::reset_timings() {
  for (auto& t : timings_) t = EpLayerTiming{};
}

void ExpertParallelBackend::run(const moe::MoeBlock& block, const moe::RoutedPairs& p,
                                moe::MoeScratch& scratch, float* out) {
  const int D = comm_.size(), me = comm_.rank();
  const int E = placement_.num_experts();
  const int64_t H = p.hidden;
  EpLayerTiming& timing = timings_[size_t(p.layer)];
  const double t0 = now();

  // 1. Group this rank's pairs by expert, then lay them out by owner: send_ is
  //    [owner 0: its experts ascending][owner 1: ...]...
  static const int32_t kNone = moe::kDroppedExpert;
  if (p.num_tokens > 0)
    moe::plan_dispatch(p.ids, p.weights, p.num_tokens, p.slots, E, plan_);
  else
    moe::plan_dispatch(&kNone, nullptr, 0, 1, E, plan_);
  std::vector<int64_t> send_counts(size_t(D) * size_t(E), 0), send_rows(size_t(D), 0);
  send_pos_.resize(size_t(plan_.num_rows()));
  send_.resize(size_t(plan_.num_rows() * H));
  int64_t pos = 0;
  for (int d = 0; d < D; ++d) {
    for (int32_t e : placement_.experts_on(d)) {
      const int64_t rows = plan_.rows_of(e);
      send_counts[size_t(d) * size_t(E) + size_t(e)] = rows;
      send_rows[size_t(d)] += rows;
      for (int64_t r = plan_.offsets[size_t(e)]; r < plan_.offsets[size_t(e) + 1]; ++r, ++pos) {
        send_pos_[size_t(r)] = pos;
        std::memcpy(send_.data() + pos * H, p.x + int64_t(plan_.token[size_t(r)]) * H,
                    size_t(H) * sizeof(float));
      }
    }
  }

  // 2. Counts first (also where a rank waits for late peers), then the rows.
  const double t1 = now();
  const std::vector<int64_t> recv_counts = exchange_counts(comm_, send_counts, E);  // [D, E]
  const double t2 = now();
  std::vector<int64_t> recv_rows(size_t(D), 0);
  for (int s = 0; s < D; ++s)
    for (int32_t e : placement_.experts_on(me))
      recv_rows[size_t(s)] += recv_counts[size_t(s) * E + e];
  RowExchange dispatch;
  dispatch.start(comm_, send_.data(), send_rows, recv_, recv_rows, H, nonblocking_);
  dispatch.wait();
  const double t3 = now();

  // 3. Each local expert over all rows it received: gather its rows from every source's
  //    segment into one block, run it once, scatter the outputs back into the same layout.
  results_.resize(recv_.size());
  std::vector<int64_t> segment(size_t(D), 0);  // start row of each source's segment
  for (int s = 1; s < D; ++s)
    segment[size_t(s)] = segment[size_t(s) - 1] + recv_rows[size_t(s) - 1];
  std::vector<int64_t> cursor = segment;
  for (int32_t e : placement_.experts_on(me)) {
    int64_t n = 0;
    for (int s = 0; s < D; ++s) n += recv_counts[size_t(s) * E + e];
    expert_in_.resize(size_t(n * H));
    expert_out_.resize(size_t(n * H));
    int64_t row = 0;
    for (int s = 0; s < D; ++s) {
      const int64_t c = recv_counts[size_t(s) * E + e];
      if (c > 0)
        std::memcpy(expert_in_.data() + row * H, recv_.data() + cursor[size_t(s)] * H,
                    size_t(c * H) * sizeof(float));
      row += c;
    }
    if (n > 0) {
      if (compute_fn_)
        compute_fn_(e, expert_in_.data(), n, H, expert_out_.data(), compute_ctx_);
      else
        moe::ffn_forward(block.experts[size_t(e)], expert_in_.data(), n, expert_out_.data(),
                         scratch.ffn);
    }
    row = 0;
    for (int s = 0; s < D; ++s) {
      const int64_t c = recv_counts[size_t(s) * E + e];
      if (c > 0)
        std::memcpy(results_.data() + cursor[size_t(s)] * H, expert_out_.data() + row * H,
                    size_t(c * H) * sizeof(float));
      cursor[size_t(s)] += c;
      row += c;
    }
  }
  const double t4 = now();

  // 4. Outputs travel back in the same layout they arrived in; combine in expert order, as
  //    the single-process path does.
  RowExchange combine;
  combine.start(comm_, results_.data(), recv_rows, back_, send_rows, H, nonblocking_);
  combine.wait();
  const double t5 = now();
  for (int64_t r = 0; r < plan_.num_rows(); ++r) {
    const float w = plan_.weight[size_t(r)];
    const float* y = back_.data() + send_pos_[size_t(r)] * H;
    float* o = out + int64_t(plan_.token[size_t(r)]) * H;
    for (int64_t i = 0; i < H; ++i) o[i] += w * y[i];
  }
  const double t6 = now();

  timing.route_s += p.route_seconds;
  timing.dispatch_s += t3 - t0;
  timing.wait_dispatch_s += t2 - t1;
  timing.compute_s += t4 - t3;
  timing.combine_s += t6 - t4;
  timing.wait_combine_s += t5 - t4;
  timing.alltoall_s += (t3 - t1) + (t5 - t4);
  timing.calls += 1;
  int64_t received = 0;
  for (int64_t r : recv_rows) received += r;
  timing.rows_sent += plan_.num_rows();
  timing.rows_received += received;
  timing.bytes_sent_remote +=
      (plan_.num_rows() - send_rows[size_t(me)] + received - recv_rows[size_t(me)]) * H *
      int64_t(sizeof(float));
}

}  // namespace sy::parallel
