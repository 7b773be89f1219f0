#include "parallel/expert_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "util/error.h"

namespace sy::parallel {

namespace {

// Running average of a layer's exchange times (the scheduler's estimate): recent calls count
// most, so a change of batch shape is followed within a few calls.
void update_estimate(moe::ExchangeEstimate& e, double dispatch_s, double combine_s) {
  constexpr double kKeep = 0.7;
  if (!e.known) {
    e = {dispatch_s, combine_s, true};
    return;
  }
  e.dispatch_s = kKeep * e.dispatch_s + (1 - kKeep) * dispatch_s;
  e.combine_s = kKeep * e.combine_s + (1 - kKeep) * combine_s;
}

}  // namespace

ExpertParallelBackend::ExpertParallelBackend(const Communicator& comm, moe::Placement placement,
                                             int num_layers, EpOptions options)
    : comm_(comm),
      placement_(std::move(placement)),
      options_(options),
      timings_(size_t(num_layers)),
      estimates_(size_t(num_layers)) {
  SY_ASSERT(!placement_.empty() && placement_.num_devices() == comm.size());
  for (MPI_Comm& c : comms_) {  // collective: every rank builds its backend at the same point
    check_mpi(MPI_Comm_dup(comm.comm(), &c), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  }
  calls_[0].comm = comms_[0];
  calls_[1].comm = comms_[1];
  if (options_.overlap && comm.thread_multiple())
    thread_ = std::thread([this] { progress_loop(); });
}

ExpertParallelBackend::~ExpertParallelBackend() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(thread_mu_);
      stop_ = true;
    }
    thread_cv_.notify_all();
    thread_.join();
  }
  for (Call& c : calls_)  // complete what an exception left in flight before freeing the comms
    for (RowExchange* x : {&c.counts, &c.rows, &c.home}) x->complete_mpi();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    for (MPI_Comm& c : comms_) MPI_Comm_free(&c);
}

void ExpertParallelBackend::reset_timings() {
  for (auto& t : timings_) t = EpLayerTiming{};
}

moe::ExchangeEstimate ExpertParallelBackend::estimate(int layer) const {
  return estimates_[size_t(layer)];
}

ExpertParallelBackend::Call& ExpertParallelBackend::call_of(int layer) {
  return calls_[size_t(layer) % 2];
}

// The background half of overlap: drives the calls in flight, so the exchanges progress (and
// their completion is stamped) while the main thread computes. It wakes only when there is
// something to do -- every 200 us while MPI still moves data, at the link model's end when
// only that remains -- because on a machine whose cores all compute, every wake-up preempts
// a compute thread.
void ExpertParallelBackend::progress_loop() {
  constexpr double kPoll = 200e-6;
  std::unique_lock<std::mutex> lock(thread_mu_);
  while (!stop_) {
    if (active_calls_ == 0) {
      thread_cv_.wait(lock);
      continue;
    }
    lock.unlock();
    const double now = monotonic_seconds();
    double wake = now + 1e-3;  // nothing pending: wait for start() / compute() to notify
    for (Call& c : calls_) {
      std::unique_lock<std::mutex> call_lock(c.mu, std::try_to_lock);
      if (!call_lock.owns_lock()) {
        wake = std::min(wake, now + kPoll);
        continue;
      }
      if (c.stage == Stage::kIdle) continue;
      advance(c);
      const RowExchange* x = c.stage == Stage::kCounts ? &c.counts
                             : c.stage == Stage::kRows ? &c.rows
                             : c.stage == Stage::kHome ? &c.home
                                                       : nullptr;
      if (x) wake = std::min(wake, x->delivered() ? x->modelled_end() : now + kPoll);
    }
    lock.lock();
    const double left = wake - monotonic_seconds();
    if (!stop_ && left > 0) thread_cv_.wait_for(lock, std::chrono::duration<double>(left));
  }
}

void ExpertParallelBackend::advance(Call& c) {
  const bool nb = options_.overlap;
  if (c.stage == Stage::kCounts && c.counts.test()) {
    // The counts say how many rows each peer sends: start the rows right away.
    const int D = comm_.size(), me = comm_.rank(), E = placement_.num_experts();
    c.recv_rows.assign(size_t(D), 0);
    for (int s = 0; s < D; ++s)
      for (int32_t e : placement_.experts_on(me))
        c.recv_rows[size_t(s)] += c.recv_counts[size_t(s) * E + e];
    c.rows.start(c.comm, me, c.send.data(), c.send_rows, c.recv, c.recv_rows, c.hidden, nb,
                 options_.link);
    c.stage = Stage::kRows;
  }
  if (c.stage == Stage::kRows && c.rows.test()) c.stage = Stage::kRowsHere;
  if (c.stage == Stage::kHome && c.home.test()) c.stage = Stage::kHomeDone;
}

double ExpertParallelBackend::wait_for(Call& c, Stage stage) {
  const double t0 = monotonic_seconds();
  Call& other = &c == &calls_[0] ? calls_[1] : calls_[0];
  for (int spins = 0;; ++spins) {
    double sleep_until = 0;
    // The other call in flight moves too: without a progress thread a peer may be waiting for
    // this rank to start that call's rows before it can serve this one.
    if (!thread_.joinable()) {
      std::lock_guard<std::mutex> lock(other.mu);
      if (other.stage != Stage::kIdle) advance(other);
    }
    {
      std::lock_guard<std::mutex> lock(c.mu);
      advance(c);
      if (c.stage >= stage) break;
      // Only the link model's time left: sleep through it rather than spin on a shared core.
      const RowExchange& x = c.stage == Stage::kCounts ? c.counts
                             : c.stage == Stage::kRows ? c.rows
                                                       : c.home;
      if (x.delivered()) sleep_until = x.modelled_end();
    }
    const double left = sleep_until - monotonic_seconds();
    if (left > 0)
      std::this_thread::sleep_for(std::chrono::duration<double>(left));
    else if (spins > 1000)
      std::this_thread::yield();
  }
  // Blocked on communication until the exchange completed; time after that (this thread not yet
  // rescheduled, e.g. with more ranks than cores) is not communication.
  const double done = stage == Stage::kRowsHere ? c.rows.completed_at() : c.home.completed_at();
  return std::max(0.0, std::min(monotonic_seconds(), done) - t0);
}

void ExpertParallelBackend::start(const moe::MoeBlock& block, const moe::RoutedPairs& p,
                                  moe::MoeScratch& scratch) {
  const int D = comm_.size();
  const int E = placement_.num_experts();
  const int64_t H = p.hidden;
  Call& c = call_of(p.layer);
  const double t0 = monotonic_seconds();
  std::unique_lock<std::mutex> lock(c.mu);
  SY_ASSERT_MSG(c.stage == Stage::kIdle, "two MoE calls of the same parity in flight");
  c.layer = p.layer;
  c.block = &block;
  c.scratch = &scratch;
  c.tokens = p.num_tokens;
  c.hidden = H;
  c.route_s = p.route_seconds;

  // 1. Group this rank's pairs by expert, then lay them out by owner: send is
  //    [owner 0: its experts ascending][owner 1: ...]...
  moe::plan_dispatch(p.ids, p.weights, p.num_tokens, p.slots, E, c.plan);
  c.send_counts.assign(size_t(D) * size_t(E), 0);
  c.recv_counts.assign(size_t(D) * size_t(E), 0);
  c.send_rows.assign(size_t(D), 0);
  c.send_pos.resize(size_t(c.plan.num_rows()));
  c.send.resize(size_t(c.plan.num_rows() * H));
  int64_t pos = 0;
  for (int d = 0; d < D; ++d) {
    for (int32_t e : placement_.experts_on(d)) {
      const int64_t rows = c.plan.rows_of(e);
      c.send_counts[size_t(d) * size_t(E) + size_t(e)] = rows;
      c.send_rows[size_t(d)] += rows;
      for (int64_t r = c.plan.offsets[size_t(e)]; r < c.plan.offsets[size_t(e) + 1]; ++r, ++pos) {
        c.send_pos[size_t(r)] = pos;
        std::memcpy(c.send.data() + pos * H, p.x + int64_t(c.plan.token[size_t(r)]) * H,
                    size_t(H) * sizeof(float));
      }
    }
  }

  // 2. Counts first (blocking mode: here also the rows); the rows follow as soon as the
  //    counts are in (advance).
  c.counts.start_counts(c.comm, comm_.rank(), c.send_counts.data(), c.recv_counts.data(), D, E,
                        options_.overlap, options_.link);
  c.stage = Stage::kCounts;
  advance(c);
  // Blocking mode: both exchanges happened above.
  c.blocked_dispatch_s =
      c.counts.blocked_seconds() + (c.stage >= Stage::kRows ? c.rows.blocked_seconds() : 0.0);
  c.start_s = monotonic_seconds() - t0;
  lock.unlock();
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> tl(thread_mu_);
      ++active_calls_;
    }
    thread_cv_.notify_all();
  }
}

void ExpertParallelBackend::progress(int layer) {
  Call& c = call_of(layer);
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.stage != Stage::kIdle) advance(c);
}

void ExpertParallelBackend::run_experts(Call& c) {
  // Each local expert over all rows it received: gather its rows from every source's segment
  // into one block, run it once, scatter the outputs back into the same layout.
  const int D = comm_.size(), me = comm_.rank(), E = placement_.num_experts();
  const int64_t H = c.hidden;
  c.results.resize(c.recv.size());
  std::vector<int64_t> segment(size_t(D), 0);  // start row of each source's segment
  for (int s = 1; s < D; ++s)
    segment[size_t(s)] = segment[size_t(s) - 1] + c.recv_rows[size_t(s) - 1];
  std::vector<int64_t> cursor = segment;
  for (int32_t e : placement_.experts_on(me)) {
    int64_t n = 0;
    for (int s = 0; s < D; ++s) n += c.recv_counts[size_t(s) * E + e];
    c.expert_in.resize(size_t(n * H));
    c.expert_out.resize(size_t(n * H));
    int64_t row = 0;
    for (int s = 0; s < D; ++s) {
      const int64_t k = c.recv_counts[size_t(s) * E + e];
      if (k > 0)
        std::memcpy(c.expert_in.data() + row * H, c.recv.data() + cursor[size_t(s)] * H,
                    size_t(k * H) * sizeof(float));
      row += k;
    }
    if (n > 0) {
      if (compute_fn_)
        compute_fn_(e, c.expert_in.data(), n, H, c.expert_out.data(), compute_ctx_);
      else
        moe::ffn_forward(c.block->experts[size_t(e)], c.expert_in.data(), n, c.expert_out.data(),
                         c.scratch->ffn);
    }
    row = 0;
    for (int s = 0; s < D; ++s) {
      const int64_t k = c.recv_counts[size_t(s) * E + e];
      if (k > 0)
        std::memcpy(c.results.data() + cursor[size_t(s)] * H, c.expert_out.data() + row * H,
                    size_t(k * H) * sizeof(float));
      cursor[size_t(s)] += k;
      row += k;
    }
  }
}

void ExpertParallelBackend::compute(int layer) {
  Call& c = call_of(layer);
  SY_ASSERT(c.layer == layer && c.stage != Stage::kIdle);
  const double waited = wait_for(c, Stage::kRowsHere);
  c.start_s += waited;
  c.blocked_dispatch_s += waited;
  const double t0 = monotonic_seconds();
  run_experts(c);  // the progress thread leaves a call alone between kRowsHere and kHome
  c.compute_s = monotonic_seconds() - t0;
  // Outputs travel back in the layout they arrived in.
  std::lock_guard<std::mutex> lock(c.mu);
  c.home.start(c.comm, comm_.rank(), c.results.data(), c.recv_rows, c.back, c.send_rows, c.hidden,
               options_.overlap, options_.link);
  c.stage = Stage::kHome;
  c.blocked_home_s = c.home.blocked_seconds();
  if (thread_.joinable()) thread_cv_.notify_all();
}

void ExpertParallelBackend::finish(int layer, float* out) {
  Call& c = call_of(layer);
  SY_ASSERT(c.layer == layer && c.stage >= Stage::kHome);
  const double t0 = monotonic_seconds();
  c.blocked_home_s += wait_for(c, Stage::kHomeDone);  // (plus a blocking start's, in compute)
  // Combine in expert order, as the single-process path does.
  const int64_t H = c.hidden;
  for (int64_t r = 0; r < c.plan.num_rows(); ++r) {
    const float w = c.plan.weight[size_t(r)];
    const float* y = c.back.data() + c.send_pos[size_t(r)] * H;
    float* o = out + int64_t(c.plan.token[size_t(r)]) * H;
    for (int64_t i = 0; i < H; ++i) o[i] += w * y[i];
  }
  const double t1 = monotonic_seconds();

  const int me = comm_.rank();
  const double dispatch_comm = c.rows.completed_at() - c.counts.started_at();
  const double home_comm = c.home.completed_at() - c.home.started_at();
  EpLayerTiming& t = timings_[size_t(layer)];
  t.route_s += c.route_s;
  t.dispatch_s += c.start_s;
  t.wait_dispatch_s += c.blocked_dispatch_s;
  t.compute_s += c.compute_s;
  t.combine_s += c.home.blocked_seconds() + (t1 - t0);
  t.wait_combine_s += c.blocked_home_s;
  t.comm_s += dispatch_comm + home_comm;
  t.calls += 1;
  int64_t received = 0;
  for (int64_t r : c.recv_rows) received += r;
  t.rows_sent += c.plan.num_rows();
  t.rows_received += received;
  t.bytes_sent_remote +=
      (c.plan.num_rows() - c.send_rows[size_t(me)] + received - c.recv_rows[size_t(me)]) * H *
      int64_t(sizeof(float));
  update_estimate(estimates_[size_t(layer)], dispatch_comm, home_comm);

  std::lock_guard<std::mutex> lock(c.mu);
  c.stage = Stage::kIdle;
  if (thread_.joinable()) {
    std::lock_guard<std::mutex> tl(thread_mu_);
    --active_calls_;
  }
}

}  // namespace sy::parallel
