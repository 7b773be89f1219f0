#include "parallel/round_trip.h"

#include <algorithm>
#include <chrono>

#include "util/error.h"

namespace sy::parallel {

int64_t RoundTrip::remote_bytes(int me) const {
  int64_t sent = 0, received = 0;
  for (size_t p = 0; p < send_rows.size(); ++p)
    if (int(p) != me) sent += send_rows[p], received += recv_rows[p];
  return (sent + received) * width * int64_t(sizeof(float));
}

void update_estimate(moe::ExchangeEstimate& e, const RoundTrip& call) {
  constexpr double kKeep = 0.7;
  const double dispatch_s = call.dispatch_comm_seconds(), combine_s = call.home_comm_seconds();
  if (!e.known) {
    e = {dispatch_s, combine_s, true};
    return;
  }
  e.dispatch_s = kKeep * e.dispatch_s + (1 - kKeep) * dispatch_s;
  e.combine_s = kKeep * e.combine_s + (1 - kKeep) * combine_s;
}

RoundTrips::RoundTrips(const Communicator& comm, const moe::Placement& placement, EpOptions options)
    : comm_(comm),
      num_experts_(placement.num_experts()),
      mine_(placement.hosted_on(comm.rank())),
      options_(options) {
  SY_ASSERT(!placement.empty() && placement.num_devices() == comm.size());
  for (int i = 0; i < 2; ++i) {  // collective: every rank builds its engine at the same point
    check_mpi(MPI_Comm_dup(comm.comm(), &comms_[i]), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comms_[i], MPI_ERRORS_RETURN);
    calls_[i].comm_ = comms_[i];
  }
  if (options_.overlap && comm.thread_multiple())
    thread_ = std::thread([this] { progress_loop(); });
}

RoundTrips::~RoundTrips() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(thread_mu_);
      stop_ = true;
    }
    thread_cv_.notify_all();
    thread_.join();
  }
  for (RoundTrip& c : calls_)  // complete what an exception left in flight before freeing comms
    for (RowExchange* x : {&c.counts_, &c.rows_, &c.home_}) x->complete_mpi();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized)
    for (MPI_Comm& c : comms_) MPI_Comm_free(&c);
}

void RoundTrips::notify_thread(int delta_active) {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(thread_mu_);
    active_calls_ += delta_active;
  }
  thread_cv_.notify_all();
}

// The background half of overlap: drives the calls in flight, so the exchanges progress (and
// their completion is stamped) while the main thread computes. It wakes only when there is
// something to do -- every 200 us while MPI still moves data, at the link model's end when
// only that remains -- because on a machine whose cores all compute, every wake-up preempts
// a compute thread.
void RoundTrips::progress_loop() {
  constexpr double kPoll = 200e-6;
  std::unique_lock<std::mutex> lock(thread_mu_);
  while (!stop_) {
    if (active_calls_ == 0) {
      thread_cv_.wait(lock);
      continue;
    }
    lock.unlock();
    const double now = monotonic_seconds();
    double wake = now + 1e-3;  // nothing pending: wait for launch() / send_results() to notify
    for (RoundTrip& c : calls_) {
      std::unique_lock<std::mutex> call_lock(c.mu_, std::try_to_lock);
      if (!call_lock.owns_lock()) {
        wake = std::min(wake, now + kPoll);
        continue;
      }
      if (c.stage_ == Stage::kIdle) continue;
      advance(c);
      const RowExchange* x = c.stage_ == Stage::kCounts ? &c.counts_
                             : c.stage_ == Stage::kRows ? &c.rows_
                             : c.stage_ == Stage::kHome ? &c.home_
                                                        : nullptr;
      if (x) wake = std::min(wake, x->delivered() ? x->modelled_end() : now + kPoll);
    }
    lock.lock();
    const double left = wake - monotonic_seconds();
    if (!stop_ && left > 0) thread_cv_.wait_for(lock, std::chrono::duration<double>(left));
  }
}

void RoundTrips::advance(RoundTrip& c) {
  const bool nb = options_.overlap;
  const float* send = c.send_from ? c.send_from : c.send.data();
  if (c.stage_ == Stage::kCounts && c.counts_.test()) {
    // The counts say how many rows each peer sends: start the rows right away.
    const int D = comm_.size(), E = num_experts_;
    if (!c.counts_in_.empty()) {  // split off the shared values
      const size_t S = c.shared_send.size(), W = size_t(E) + S;
      c.shared_recv.resize(size_t(D) * S);
      for (size_t s = 0; s < size_t(D); ++s) {
        std::copy_n(c.counts_in_.begin() + long(s * W), E, c.recv_counts.begin() + long(s * E));
        std::copy_n(c.counts_in_.begin() + long(s * W + E), S, c.shared_recv.begin() + long(s * S));
      }
    }
    c.recv_rows.assign(size_t(D), 0);
    for (int s = 0; s < D; ++s)
      for (int32_t e : mine_) c.recv_rows[size_t(s)] += c.recv_counts[size_t(s) * E + e];
    c.rows_.start(c.comm_, comm_.rank(), send, c.send_rows, c.recv, c.recv_rows, c.width, nb,
                  options_.link);
    c.stage_ = Stage::kRows;
  }
  if (c.stage_ == Stage::kRows && c.rows_.test()) c.stage_ = Stage::kRowsHere;
  if (c.stage_ == Stage::kHome && c.home_.test()) c.stage_ = Stage::kHomeDone;
}

double RoundTrips::wait_for(RoundTrip& c, Stage stage) {
  const double t0 = monotonic_seconds();
  RoundTrip& other = &c == &calls_[0] ? calls_[1] : calls_[0];
  for (int spins = 0;; ++spins) {
    double sleep_until = 0;
    // The other call in flight moves too: without a progress thread a peer may be waiting for
    // this rank to start that call's rows before it can serve this one.
    if (!thread_.joinable()) {
      std::lock_guard<std::mutex> lock(other.mu_);
      if (other.stage_ != Stage::kIdle) advance(other);
    }
    {
      std::lock_guard<std::mutex> lock(c.mu_);
      advance(c);
      if (c.stage_ >= stage) break;
      // Only the link model's time left: sleep through it rather than spin on a shared core.
      const RowExchange& x = c.stage_ == Stage::kCounts ? c.counts_
                             : c.stage_ == Stage::kRows ? c.rows_
                                                        : c.home_;
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
  const double done = stage == Stage::kRowsHere ? c.rows_.completed_at() : c.home_.completed_at();
  return std::max(0.0, std::min(monotonic_seconds(), done) - t0);
}

RoundTrip& RoundTrips::prepare(int layer, int64_t width) {
  RoundTrip& c = call_of(layer);
  std::lock_guard<std::mutex> lock(c.mu_);
  SY_ASSERT_MSG(c.stage_ == Stage::kIdle, "two expert-parallel calls of the same parity in flight");
  c.layer = layer;
  c.width = width;
  c.send_from = nullptr;
  c.blocked_dispatch_s = c.blocked_home_s = 0;
  return c;
}

void RoundTrips::launch(RoundTrip& c, bool counts_known) {
  const int D = comm_.size();
  {
    std::lock_guard<std::mutex> lock(c.mu_);
    SY_ASSERT(c.stage_ == Stage::kIdle && int64_t(c.send_rows.size()) == D);
    if (counts_known) {
      SY_ASSERT(int64_t(c.recv_rows.size()) == D);
      const float* send = c.send_from ? c.send_from : c.send.data();
      c.rows_.start(c.comm_, comm_.rank(), send, c.send_rows, c.recv, c.recv_rows, c.width,
                    options_.overlap, options_.link);
      c.first_start_ = c.rows_.started_at();
      c.stage_ = Stage::kRows;
      c.blocked_dispatch_s = c.rows_.blocked_seconds();
    } else {
      c.recv_counts.assign(size_t(D) * size_t(num_experts_), 0);
      if (c.shared_send.empty()) {
        c.counts_in_.clear();
        c.counts_.start_counts(c.comm_, comm_.rank(), c.send_counts.data(), c.recv_counts.data(), D,
                               num_experts_, options_.overlap, options_.link);
      } else {  // each peer's counts followed by the shared values, in one exchange
        const size_t E = size_t(num_experts_), S = c.shared_send.size();
        c.counts_out_.resize(size_t(D) * (E + S));
        for (size_t d = 0; d < size_t(D); ++d) {
          std::copy_n(c.send_counts.begin() + long(d * E), E,
                      c.counts_out_.begin() + long(d * (E + S)));
          std::copy(c.shared_send.begin(), c.shared_send.end(),
                    c.counts_out_.begin() + long(d * (E + S) + E));
        }
        c.counts_in_.assign(c.counts_out_.size(), 0);
        c.counts_.start_counts(c.comm_, comm_.rank(), c.counts_out_.data(), c.counts_in_.data(), D,
                               int64_t(E + S), options_.overlap, options_.link);
      }
      c.first_start_ = c.counts_.started_at();
      c.stage_ = Stage::kCounts;
      advance(c);  // blocking mode: the rows are exchanged here too
      c.blocked_dispatch_s = c.counts_.blocked_seconds() +
                             (c.stage_ >= Stage::kRows ? c.rows_.blocked_seconds() : 0.0);
    }
  }
  notify_thread(+1);
}

void RoundTrips::progress(int layer) {
  RoundTrip& c = call_of(layer);
  std::lock_guard<std::mutex> lock(c.mu_);
  if (c.stage_ != Stage::kIdle) advance(c);
}

RoundTrip& RoundTrips::await_counts(int layer) {
  RoundTrip& c = call_of(layer);
  SY_ASSERT(c.layer == layer && c.stage_ != Stage::kIdle);
  c.blocked_dispatch_s += wait_for(c, Stage::kRows);
  return c;
}

RoundTrip& RoundTrips::await_rows(int layer) {
  RoundTrip& c = call_of(layer);
  SY_ASSERT(c.layer == layer && c.stage_ != Stage::kIdle);
  c.blocked_dispatch_s += wait_for(c, Stage::kRowsHere);
  return c;  // the progress thread leaves a call alone between kRowsHere and kHome
}

void RoundTrips::send_results(RoundTrip& c) {
  {
    std::lock_guard<std::mutex> lock(c.mu_);
    SY_ASSERT(c.stage_ == Stage::kRowsHere);
    c.home_.start(c.comm_, comm_.rank(), c.results.data(), c.recv_rows, c.back, c.send_rows,
                  c.width, options_.overlap, options_.link);
    c.stage_ = Stage::kHome;
    c.blocked_home_s = c.home_.blocked_seconds();
  }
  notify_thread(0);
}

RoundTrip& RoundTrips::await_results(int layer) {
  RoundTrip& c = call_of(layer);
  SY_ASSERT(c.layer == layer && c.stage_ >= Stage::kHome);
  c.blocked_home_s += wait_for(c, Stage::kHomeDone);
  return c;
}

void RoundTrips::release(RoundTrip& c) {
  {
    std::lock_guard<std::mutex> lock(c.mu_);
    SY_ASSERT(c.stage_ == Stage::kHomeDone);
    c.stage_ = Stage::kIdle;
  }
  notify_thread(-1);
}

}  // namespace sy::parallel
