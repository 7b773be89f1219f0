#include "parallel/expert_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "ops/threads.h"

#include "util/error.h"

namespace sy::parallel {

ExpertParallelBackend::ExpertParallelBackend(const Communicator& comm, moe::Placement placement,
                                             int num_layers, EpOptions options)
    : comm_(comm),
      placement_(std::move(placement)),
      trips_(comm, placement_, options),
      timings_(size_t(num_layers)),
      estimates_(size_t(num_layers)) {}

ExpertParallelBackend::~ExpertParallelBackend() = default;

void ExpertParallelBackend::reset_timings() {
  for (auto& t : timings_) t = EpLayerTiming{};
  precision_log_.clear();
}

moe::ExchangeEstimate ExpertParallelBackend::estimate(int layer) const {
  return estimates_[size_t(layer)];
}

void ExpertParallelBackend::start(const moe::MoeBlock& block, const moe::RoutedPairs& p,
                                  moe::MoeScratch& scratch) {
  const int D = comm_.size();
  const int E = placement_.num_experts();
  const int64_t H = p.hidden;
  const double t0 = monotonic_seconds();
  RoundTrip& trip = trips_.prepare(p.layer, H);
  Call& c = call_of(p.layer);
  c.block = &block;
  c.scratch = &scratch;
  c.route_s = p.route_seconds;

  // Group this rank's pairs by expert, then lay them out by host: send is
  // [host 0: its experts ascending][host 1: ...]... A replicated expert's rows are shared by
  // its hosts (Placement::host_of_row); each host sees only the rows sent to it.
  moe::plan_dispatch(p.ids, p.weights, p.num_tokens, p.slots, E, c.plan);
  c.plan.scale_inputs = block.scale_inputs;
  trip.send_counts.assign(size_t(D) * size_t(E), 0);
  trip.send_rows.assign(size_t(D), 0);
  c.send_pos.resize(size_t(c.plan.num_rows()));
  trip.send.resize(size_t(c.plan.num_rows() * H));
  const int me = comm_.rank();
  int64_t pos = 0;
  for (int d = 0; d < D; ++d) {
    for (int32_t e : placement_.hosted_on(d)) {
      const int64_t first = c.plan.offsets[size_t(e)];
      const bool shared = placement_.hosts_of(e).size() > 1;
      int64_t rows = 0;
      for (int64_t r = first; r < c.plan.offsets[size_t(e) + 1]; ++r) {
        if (shared && placement_.host_of_row(e, me, r - first) != d) continue;
        c.send_pos[size_t(r)] = pos;
        float* row = trip.send.data() + pos * H;
        std::memcpy(row, p.x + int64_t(c.plan.token[size_t(r)]) * H, size_t(H) * sizeof(float));
        if (c.plan.scale_inputs)  // Llama 4: the expert runs on w x
          for (int64_t i = 0; i < H; ++i) row[i] *= c.plan.weight[size_t(r)];
        ++pos, ++rows;
      }
      trip.send_counts[size_t(d) * size_t(E) + size_t(e)] = rows;
      trip.send_rows[size_t(d)] += rows;
    }
  }
  // ReaLB: every rank's routing histogram, tagged rows and token count travel with the counts:
  // [E rows per expert][E tagged rows per expert][tokens][1 if tagged].
  trip.shared_send.clear();
  if (options().precision.tracked()) {
    trip.shared_send.assign(size_t(2 * E + 2), 0);
    for (int e = 0; e < E; ++e) {
      trip.shared_send[size_t(e)] = c.plan.rows_of(e);
      if (p.tags)
        for (int64_t r = c.plan.offsets[size_t(e)]; r < c.plan.offsets[size_t(e) + 1]; ++r)
          trip.shared_send[size_t(E + e)] += p.tags[c.plan.token[size_t(r)]];
    }
    trip.shared_send[size_t(2 * E)] = p.num_tokens;
    trip.shared_send[size_t(2 * E + 1)] = p.tags != nullptr;
  }
  trips_.launch(trip, false);  // counts first; the rows follow as soon as they are in
  c.start_s = monotonic_seconds() - t0;
}

void ExpertParallelBackend::choose_and_convert(Call& c, RoundTrip& trip) {
  const int D = comm_.size(), me = comm_.rank(), E = placement_.num_experts();
  const size_t S = size_t(2 * E + 2);
  std::vector<int64_t> rows(size_t(E), 0), tagged(size_t(E), 0);
  int64_t tokens = 0;
  bool tags = false;
  for (int s = 0; s < D; ++s) {
    const int64_t* v = trip.shared_recv.data() + size_t(s) * S;
    for (int e = 0; e < E; ++e) rows[size_t(e)] += v[e], tagged[size_t(e)] += v[E + e];
    tokens += v[2 * E];
    tags |= v[2 * E + 1] != 0;
  }
  if (!tags) tagged.clear();
  const moe::DeviceLoads loads = moe::device_loads(placement_, rows, tagged, tokens);
  const moe::PrecisionPolicy& policy = options().precision;
  const moe::PrecisionChoice choice = moe::choose_precision(policy, loads, me);
  const double mean = double(std::accumulate(rows.begin(), rows.end(), int64_t(0))) / D;
  c.precision = {trip.layer,
                 me,
                 choice.low,
                 loads.rows[size_t(me)],
                 mean > 0 ? double(loads.rows[size_t(me)]) / mean : 0.0,
                 0,
                 0,
                 0,
                 choice.why,
                 choice.reason};
  low_views_.assign(size_t(E), nullptr);
  low_.begin();
  if (!choice.low) return;
  const double t0 = monotonic_seconds();
  for (int32_t e : placement_.hosted_on(me))
    if (rows[size_t(e)] > 0)
      low_views_[size_t(e)] =
          &low_.convert(c.block->experts[size_t(e)], policy.format, ops::num_threads());
  c.precision.convert_s = monotonic_seconds() - t0;
}

void ExpertParallelBackend::progress(int layer) {
  trips_.progress(layer);
}

void ExpertParallelBackend::run_experts(Call& c, RoundTrip& trip) {
  // Each local expert over all rows it received: gather its rows from every source's segment
  // into one block, run it once, scatter the outputs back into the same layout.
  const int D = comm_.size(), me = comm_.rank(), E = placement_.num_experts();
  const int64_t H = trip.width;
  trip.results.resize(trip.recv.size());
  std::vector<int64_t> cursor(size_t(D), 0);  // start row of each source's segment
  for (int s = 1; s < D; ++s)
    cursor[size_t(s)] = cursor[size_t(s) - 1] + trip.recv_rows[size_t(s) - 1];
  for (int32_t e : placement_.hosted_on(me)) {
    int64_t n = 0;
    for (int s = 0; s < D; ++s) n += trip.recv_counts[size_t(s) * E + e];
    c.expert_in.resize(size_t(n * H));
    c.expert_out.resize(size_t(n * H));
    int64_t row = 0;
    for (int s = 0; s < D; ++s) {
      const int64_t k = trip.recv_counts[size_t(s) * E + e];
      if (k > 0)
        std::memcpy(c.expert_in.data() + row * H, trip.recv.data() + cursor[size_t(s)] * H,
                    size_t(k * H) * sizeof(float));
      row += k;
    }
    if (n > 0) {
      if (compute_fn_)
        compute_fn_(e, c.expert_in.data(), n, H, c.expert_out.data(), compute_ctx_);
      else
        moe::ffn_forward(low_views_.empty() || !low_views_[size_t(e)] ? c.block->experts[size_t(e)]
                                                                      : *low_views_[size_t(e)],
                         c.expert_in.data(), n, c.expert_out.data(), c.scratch->ffn);
    }
    row = 0;
    for (int s = 0; s < D; ++s) {
      const int64_t k = trip.recv_counts[size_t(s) * E + e];
      if (k > 0)
        std::memcpy(trip.results.data() + cursor[size_t(s)] * H, c.expert_out.data() + row * H,
                    size_t(k * H) * sizeof(float));
      cursor[size_t(s)] += k;
      row += k;
    }
  }
}

void ExpertParallelBackend::compute(int layer) {
  Call& c = call_of(layer);
  const double t0 = monotonic_seconds();
  const bool precision = options().precision.tracked();
  double converted = 0, converted_at = 0;  // ReaLB: seconds converting experts, and when done
  if (precision) {
    choose_and_convert(c, trips_.await_counts(layer));
    converted = c.precision.convert_s;
    converted_at = monotonic_seconds();
  }
  RoundTrip& trip = trips_.await_rows(layer);
  if (precision)  // hidden: the part of the conversion before the rows were all here
    c.precision.convert_hidden_s =
        std::clamp(trip.rows_arrived_at() - (converted_at - converted), 0.0, converted);
  const double t1 = monotonic_seconds();
  c.start_s += t1 - t0 - converted;
  run_experts(c, trip);
  c.compute_s = monotonic_seconds() - t1;
  if (precision) c.precision.expert_s = c.compute_s;
  trips_.send_results(trip);  // outputs travel back in the layout they arrived in
  c.home_blocked_at_send = trip.blocked_home_s;
}

void ExpertParallelBackend::finish(int layer, float* out) {
  Call& c = call_of(layer);
  const double t0 = monotonic_seconds();
  RoundTrip& trip = trips_.await_results(layer);
  // Combine in expert order, as the single-process path does.
  const int64_t H = trip.width;
  for (int64_t r = 0; r < c.plan.num_rows(); ++r) {
    const float w = c.plan.scale_inputs ? 1.0f : c.plan.weight[size_t(r)];
    const float* y = trip.back.data() + c.send_pos[size_t(r)] * H;
    float* o = out + int64_t(c.plan.token[size_t(r)]) * H;
    for (int64_t i = 0; i < H; ++i) o[i] += w * y[i];
  }
  const double t1 = monotonic_seconds();

  EpLayerTiming& t = timings_[size_t(layer)];
  t.route_s += c.route_s;
  t.dispatch_s += c.start_s;
  t.wait_dispatch_s += trip.blocked_dispatch_s;
  t.compute_s += c.compute_s;
  t.combine_s += c.home_blocked_at_send + (t1 - t0);
  t.wait_combine_s += trip.blocked_home_s;
  t.comm_s += trip.dispatch_comm_seconds() + trip.home_comm_seconds();
  t.calls += 1;
  for (int64_t r : trip.send_rows) t.rows_sent += r;
  for (int64_t r : trip.recv_rows) t.rows_received += r;
  t.bytes_sent_remote += trip.remote_bytes(comm_.rank());
  if (options().precision.tracked()) {
    t.low_calls += c.precision.low;
    t.convert_s += c.precision.convert_s;
    t.convert_hidden_s += c.precision.convert_hidden_s;
    precision_log_.push_back(c.precision);
  }
  update_estimate(estimates_[size_t(layer)], trip);
  trips_.release(trip);
}

}  // namespace sy::parallel
