// Torch-free finite-difference checks of the trainer's backward passes: causal grouped-query
// attention (train/attention_grad.h), RoPE (train::rope_backward against ops::rope_neox),
// RMSNorm and cross-entropy (train/row_ops.h). Each loss is a fixed random linear functional of
// the forward's output (or the cross-entropy itself), summed in double; its gradient from the
// backward pass is compared with finite differences of the float32 forward, step h = 1e-2 on
// inputs of size ~1:
//   - along one random direction (finite_difference.h: fourth-order central difference, with
//     the steps the float inputs actually took), to 1e-3 relative;
//   - at every coordinate of these small inputs (central difference), to 1e-3 of the largest
//     gradient entry.
// The float32 forward's rounding noise (~eps * sqrt(n) * |terms|) divided by h and the
// truncation error stay below 7e-5 relative on these cases; a gradient 1% off fails both.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "finite_difference.h"
#include "ops/elementwise.h"
#include "ops/norm_rows.h"
#include "ops/threads.h"
#include "random_data.h"
#include "train/attention_grad.h"
#include "train/row_ops.h"

namespace sy::train {
namespace {

using sy::testing::directional_derivative;
using sy::testing::directional_matches;
using sy::testing::expect_grad_matches;

constexpr double kRelTol = 1e-3;
constexpr double kStep = 1e-2;

using sy::testing::randn;

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

// Both checks of the file header on one input x with gradient g of f.
void check_gradient(std::vector<float>& x, const std::vector<float>& g,
                    const std::function<double()>& f, double h, uint32_t dir_seed,
                    const std::string& what) {
  const std::vector<float> dir = randn(x.size(), dir_seed);
  const auto d = directional_derivative(x, g, dir, h, f);
  EXPECT_TRUE(directional_matches(d, x.size(), kRelTol)) << what;
  expect_grad_matches(
      x, g, f, [] { return true; }, h, kRelTol, what.c_str());
}

// ---- attention ----

struct AttentionCase {
  const char* name;
  AttentionDims dims;
};

void PrintTo(const AttentionCase& c, std::ostream* os) {
  *os << c.name;
}

class AttentionGrad : public ::testing::TestWithParam<AttentionCase> {};

// loss = sum(out * R): d_out = R.
TEST_P(AttentionGrad, MatchesFiniteDifferences) {
  ops::set_num_threads(1);  // tiny products: threads only add wake-up latency
  const AttentionDims d = GetParam().dims;
  const int64_t T = d.batch * d.seq;
  std::vector<float> q = randn(size_t(T * d.q_width()), 1);
  std::vector<float> k = randn(size_t(T * d.kv_width()), 2);
  std::vector<float> v = randn(size_t(T * d.kv_width()), 3);
  const std::vector<float> R = randn(size_t(T * d.q_width()), 4);
  std::vector<float> out(size_t(T * d.q_width())), probs(size_t(d.prob_size()));
  auto f = [&] {
    model::batched_causal_attention(d, q.data(), k.data(), v.data(), out.data(), probs.data());
    return dot(out, R);
  };
  f();
  std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
  attention_backward(d, q.data(), k.data(), v.data(), probs.data(), R.data(), dq.data(), dk.data(),
                     dv.data());
  const std::string name = GetParam().name;
  check_gradient(q, dq, f, kStep, 11, name + " dq");
  check_gradient(k, dk, f, kStep, 12, name + " dk");
  check_gradient(v, dv, f, kStep, 13, name + " dv");
  ops::set_num_threads(0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionGrad,
    ::testing::Values(
        AttentionCase{"mha",
                      {.batch = 1, .seq = 5, .num_heads = 2, .num_kv_heads = 2, .head_dim = 4}},
        AttentionCase{"gqa_two_sequences",
                      {.batch = 2, .seq = 6, .num_heads = 4, .num_kv_heads = 2, .head_dim = 3}},
        // 67 rows: two query blocks of the kernel (64 rows each); one kv head for three.
        AttentionCase{"mqa_two_blocks",
                      {.batch = 1, .seq = 67, .num_heads = 3, .num_kv_heads = 1, .head_dim = 4}}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- RoPE ----

// loss = sum(R * rope_neox(head)): the gradient is rope_backward(R). Past rot_dim the head
// passes through, and so does the gradient.
TEST(RopeGrad, BackwardIsTheForwardsAdjoint) {
  for (int64_t rot_dim : {2, 8, 30, 64}) {
    for (double pos : {1.0, 37.0, 4095.0}) {
      const int64_t head_dim = rot_dim + 6, half = rot_dim / 2;
      std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos * std::pow(10000.0, -2.0 * double(i) / double(rot_dim));
        cs[size_t(i)] = float(std::cos(angle));
        sn[size_t(i)] = float(std::sin(angle));
      }
      const uint32_t seed = uint32_t(rot_dim) * 100 + uint32_t(pos);
      std::vector<float> head = randn(size_t(head_dim), seed);
      const std::vector<float> R = randn(size_t(head_dim), seed + 1);
      auto f = [&] {
        std::vector<float> y = head;
        ops::rope_neox(y.data(), rot_dim, cs.data(), sn.data());
        return dot(y, R);
      };
      std::vector<float> g = R;
      rope_backward(g.data(), rot_dim, cs.data(), sn.data());
      check_gradient(head, g, f, kStep, seed + 2,
                     "rot_dim=" + std::to_string(rot_dim) + " pos=" + std::to_string(pos));
    }
  }
}

// ---- RMSNorm ----

// loss = sum(R * ops::rmsnorm_rows(x, w)): dy = R; d x and d w from rmsnorm_backward.
TEST(RmsNormGrad, MatchesFiniteDifferences) {
  ops::set_num_threads(1);
  for (int64_t n : {2, 7, 33}) {
    const int64_t rows = 3;
    const uint32_t seed = uint32_t(n) * 10;
    std::vector<float> x = randn(size_t(rows * n), seed);
    std::vector<float> w = randn(size_t(n), seed + 1, 0.3f);
    for (float& e : w) e += 1.0f;
    const std::vector<float> R = randn(size_t(rows * n), seed + 2);
    auto f = [&] {
      std::vector<float> y(x.size()), rstd(static_cast<size_t>(rows));
      ops::rmsnorm_rows(x.data(), w.data(), rows, n, 1e-5f, y.data(), rstd.data());
      return dot(y, R);
    };
    std::vector<float> y(x.size()), rstd(static_cast<size_t>(rows));
    ops::rmsnorm_rows(x.data(), w.data(), rows, n, 1e-5f, y.data(), rstd.data());
    std::vector<float> dx(x.size(), NAN), dw(w.size(), 0.0f);
    rmsnorm_backward(R.data(), x.data(), w.data(), rstd.data(), rows, n, dx.data(), dw.data(),
                     false);
    check_gradient(x, dx, f, kStep, seed + 3, "dx n=" + std::to_string(n));
    check_gradient(w, dw, f, kStep, seed + 4, "dw n=" + std::to_string(n));
  }
  ops::set_num_threads(0);
}

// ---- cross-entropy ----

// loss = scale * cross_entropy(z, targets): the function's own loss, its gradient in place.
TEST(CrossEntropyGrad, MatchesFiniteDifferences) {
  ops::set_num_threads(1);
  for (int64_t vocab : {2, 7, 33, 1000}) {
    for (float scale : {1.0f, 0.25f}) {
      const int64_t rows = 4;
      const uint32_t seed = uint32_t(vocab) * 10 + (scale == 1.0f ? 0 : 1);
      std::vector<float> z = randn(size_t(rows * vocab), seed, 2.0f);
      const std::vector<int32_t> targets = {int32_t(vocab - 1), 0, -1, int32_t(vocab / 2)};
      auto f = [&] {
        std::vector<float> tmp = z;
        return scale *
               cross_entropy_forward_backward(tmp.data(), targets.data(), rows, vocab, scale);
      };
      std::vector<float> g = z;
      cross_entropy_forward_backward(g.data(), targets.data(), rows, vocab, scale);
      for (int64_t i = 2 * vocab; i < 3 * vocab; ++i)
        ASSERT_EQ(g[size_t(i)], 0.0f) << "row without a target";
      check_gradient(z, g, f, kStep, seed + 1,
                     "vocab=" + std::to_string(vocab) + " scale=" + std::to_string(scale));
    }
  }
  ops::set_num_threads(0);
}

}  // namespace
}  // namespace sy::train
