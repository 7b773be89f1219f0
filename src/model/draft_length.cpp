#include "model/draft_length.h"

#include <algorithm>
#include <cmath>

namespace sy::model {

namespace {
constexpr size_t kWindow = 64;  // calls the fit keeps: costs drift as the sequences grow
// k = 0 first: without a plain call to anchor the fit, the time of N = b positions is an
// extrapolation, and a model that never tries k = 0 may never learn that it pays.
constexpr int kExplore[] = {0, 1, 2, 4};

// Solves the n x n system A x = b (n <= 3) by Gaussian elimination; false when singular.
bool solve(double A[3][3], double b[3], int n, double x[3]) {
  for (int c = 0; c < n; ++c) {
    int pivot = c;
    for (int r = c + 1; r < n; ++r)
      if (std::abs(A[r][c]) > std::abs(A[pivot][c])) pivot = r;
    if (std::abs(A[pivot][c]) < 1e-12) return false;
    std::swap(A[c], A[pivot]);
    std::swap(b[c], b[pivot]);
    for (int r = c + 1; r < n; ++r) {
      const double f = A[r][c] / A[c][c];
      for (int k = c; k < n; ++k) A[r][k] -= f * A[c][k];
      b[r] -= f * b[c];
    }
  }
  for (int r = n - 1; r >= 0; --r) {
    double s = b[r];
    for (int k = r + 1; k < n; ++k) s -= A[r][k] * x[k];
    x[r] = s / A[r][r];
  }
  return true;
}
}  // namespace

DraftLengthModel::DraftLengthModel(int max_k, int64_t expert_pairs)
    : max_k_(std::max(1, max_k)), expert_pairs_(expert_pairs) {}

double DraftLengthModel::acceptance() const {
  const int64_t n = accepted_ + rejected_;
  const double a = n ? double(accepted_) / double(n) : 0.5;
  return std::clamp(a, 0.01, 0.99);
}

double DraftLengthModel::experts_for(double positions) const {
  if (expert_pairs_ == 0) return 0;
  return double(expert_pairs_) * (1 - std::pow(1 - p_, positions));
}

double DraftLengthModel::predict(int k, int64_t batch) const {
  const double t_draft = draft_calls_ ? draft_s_ / double(draft_calls_) : 0;
  const double n = double(batch) * (k + 1);
  return k * t_draft + c0_ + c1_ * n + c2_ * experts_for(n);
}

void DraftLengthModel::fit() {
  if (calls_.size() > kWindow) calls_.erase(calls_.begin(), calls_.end() - kWindow);
  if (expert_pairs_ > 0) {  // p: the chance that one position needs a given (layer, expert)
    double sum = 0;
    for (const Call& c : calls_) {
      const double share = std::min(c.experts / double(expert_pairs_), 0.999);
      sum += 1 - std::pow(1 - share, 1 / c.positions);
    }
    p_ = sum / double(calls_.size());
  }
  // Least squares for seconds = c0 + c1 positions (+ c2 experts) with every coefficient >= 0:
  // the best fit over the subsets of terms whose unconstrained solution is non-negative (at
  // most 3 terms, so 7 subsets).
  const int terms = expert_pairs_ > 0 ? 3 : 2;
  double best_sse = -1, best[3] = {0, 0, 0};
  for (int mask = 1; mask < (1 << terms); ++mask) {
    int idx[3], n = 0;
    for (int t = 0; t < terms; ++t)
      if (mask & (1 << t)) idx[n++] = t;
    if (calls_.size() < size_t(n)) continue;
    double A[3][3] = {}, b[3] = {}, x[3] = {};
    auto feature = [&](const Call& c, int t) {
      return t == 0 ? 1.0 : t == 1 ? c.positions : experts_for(c.positions);
    };
    for (const Call& c : calls_)
      for (int r = 0; r < n; ++r) {
        for (int k = 0; k < n; ++k) A[r][k] += feature(c, idx[r]) * feature(c, idx[k]);
        b[r] += feature(c, idx[r]) * c.seconds;
      }
    if (!solve(A, b, n, x) || std::any_of(x, x + n, [](double v) { return v < 0; })) continue;
    double sse = 0, coef[3] = {0, 0, 0};
    for (int r = 0; r < n; ++r) coef[idx[r]] = x[r];
    for (const Call& c : calls_) {
      const double e =
          coef[0] + coef[1] * c.positions + coef[2] * experts_for(c.positions) - c.seconds;
      sse += e * e;
    }
    if (best_sse < 0 || sse < best_sse) {
      best_sse = sse;
      std::copy(coef, coef + 3, best);
    }
  }
  c0_ = best[0], c1_ = best[1], c2_ = best[2];
}

int DraftLengthModel::choose(int64_t batch) {
  pending_prediction_ = -1;
  if (steps_ < int(std::size(kExplore))) return std::min(kExplore[steps_], max_k_);
  const double a = acceptance();
  int best = 1;
  double best_rate = -1;
  for (int k = 0; k <= max_k_; ++k) {  // k = 0: a plain step, the draft idle
    const double tokens = double(batch) * (1 - std::pow(a, k + 1)) / (1 - a);
    const double t = predict(k, batch);
    const double rate = t > 0 ? tokens / t : 0;
    if (rate > best_rate) best_rate = rate, best = k;
  }
  pending_prediction_ = predict(best, batch);
  return best;
}

void DraftLengthModel::record(int k, int64_t batch, double draft_s, double verify_s,
                              int64_t experts_run, int64_t accepted, int64_t rejected) {
  calls_.push_back({double(batch) * (k + 1), double(experts_run), verify_s});
  draft_s_ += draft_s;
  draft_calls_ += k;
  accepted_ += accepted;  // plain steps (k = 0) add no acceptance evidence
  rejected_ += rejected;
  const double measured = draft_s + verify_s;
  if (pending_prediction_ > 0 && measured > 0)
    errors_.push_back(std::abs(pending_prediction_ - measured) / measured);
  ++steps_;
  fit();
}

double DraftLengthModel::mean_abs_error() const {
  if (errors_.empty()) return 0;
  double s = 0;
  for (double e : errors_) s += e;
  return s / double(errors_.size());
}

}  // namespace sy::model
