// Optimizer pieces of the trainer: the learning-rate schedule's values and errors;
// clip_grad_norm's norm, scale and thread-count independence; AdamW against a scalar
// double-precision implementation of the update written here from the formulas (not from
// adamw.cpp), weight decay on matrices only, buffers untouched, a save/load round trip that
// resumes bit for bit; and, when /usr/bin/python3 has torch, torch.optim.AdamW +
// clip_grad_norm_ themselves (tests/reference/adamw_torch.py).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>

#include "expect_error.h"
#include "io/safetensors.h"
#include "temp_dir.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"
#include "util/error.h"

namespace sy::train {
namespace {

using sy::testing::expect_error;

using sy::testing::TempDir;

void fill(std::vector<float>& v, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  for (float& x : v) x = d(rng);
}

// A matrix (decays), a vector (no decay) and a frozen buffer.
ParamSet make_params(uint32_t seed) {
  ParamSet set;
  std::mt19937 rng(seed);
  fill(set.add("model.layers.0.mlp.gate.weight", {5, 3}).value, rng, 1.0f);
  fill(set.add("model.norm.weight", {7}).value, rng, 1.0f);
  Param& buf = set.add("model.layers.0.mlp.gate.e_score_correction_bias", {3});
  fill(buf.value, rng, 1.0f);
  buf.trainable = false;
  return set;
}

void random_grads(ParamSet& set, std::mt19937& rng) {
  for (Param& p : set.all()) fill(p.grad, rng, 3.0f);
}

TEST(LrSchedule, WarmupThenCosineToMin) {
  const LrSchedule s{3e-3, 3, 10, 0.1};
  auto close = [](double a, double b) { return std::fabs(a - b) <= 1e-15 * std::fabs(b); };
  EXPECT_TRUE(close(lr_at(s, 1), 1e-3));
  EXPECT_TRUE(close(lr_at(s, 2), 2e-3));
  EXPECT_TRUE(close(lr_at(s, 3), 3e-3));
  EXPECT_TRUE(close(lr_at(s, 10), 3e-4)) << lr_at(s, 10);
  EXPECT_TRUE(close(lr_at(s, 6), 3e-4 + 0.5 * 2.7e-3 * (1 + std::cos(M_PI * 3 / 7))));
  for (int64_t i = 4; i <= 10; ++i) EXPECT_LT(lr_at(s, i), lr_at(s, i - 1)) << i;
  // No warmup: cosine from step 1; warmup == total: linear ramp only; one step.
  EXPECT_TRUE(close(lr_at({1.0, 0, 4, 0.0}, 2), 0.5));
  EXPECT_TRUE(close(lr_at({1.0, 0, 4, 0.0}, 4), 0.0 + 0.5 * (1 + std::cos(M_PI))));
  EXPECT_TRUE(close(lr_at({1.0, 4, 4, 0.1}, 4), 1.0));
  EXPECT_TRUE(close(lr_at({2.0, 0, 1, 0.5}, 1), 1.0));
}

TEST(LrSchedule, BadInputIsAClearError) {
  const LrSchedule s{3e-3, 3, 10, 0.1};
  expect_error([&] { lr_at(s, 0); }, {"step 0", "[1, 10]"});
  expect_error([&] { lr_at(s, 11); }, {"step 11"});
  expect_error([&] { validate({3e-3, 11, 10, 0.1}); }, {"warmup steps 11", "total steps 10"});
  expect_error([&] { validate({3e-3, -1, 10, 0.1}); }, {"warmup steps -1"});
  expect_error([&] { validate({0.0, 0, 10, 0.1}); }, {"lr_max 0"});
  expect_error([&] { validate({NAN, 0, 10, 0.1}); }, {"lr_max nan"});
  expect_error([&] { validate({1.0, 0, 0, 0.1}); }, {"total steps 0"});
  expect_error([&] { validate({1.0, 0, 5, 1.5}); }, {"min_lr_ratio 1.5"});
}

TEST(ClipGradNorm, NormScaleAndFrozenBuffers) {
  ParamSet set;
  Param& a = set.add("a", {2, 2});
  Param& b = set.add("b", {1});
  Param& frozen = set.add("frozen", {2});
  frozen.trainable = false;
  a.grad = {3, 0, 0, 0};
  b.grad = {4};
  frozen.grad = {100, 100};
  EXPECT_DOUBLE_EQ(clip_grad_norm(set, 0.0), 5.0) << "max_norm 0: norm only";
  EXPECT_EQ(a.grad[0], 3.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(set, 10.0), 5.0);
  EXPECT_EQ(a.grad[0], 3.0f) << "coefficient clamped to 1: unchanged";
  EXPECT_EQ(b.grad[0], 4.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(set, 1.0), 5.0) << "the norm before clipping";
  const float coef = 1.0f / (5.0f + 1e-6f);  // torch: reciprocal of (norm + 1e-6) times max_norm
  EXPECT_EQ(a.grad[0], 3.0f * coef);
  EXPECT_EQ(b.grad[0], 4.0f * coef);
  EXPECT_EQ(frozen.grad[0], 100.0f) << "buffers neither counted nor scaled";
  EXPECT_NEAR(clip_grad_norm(set, 0.0), 1.0, 1e-6);
}

TEST(ClipGradNorm, IndependentOfThreadCount) {
  ParamSet set;
  std::mt19937 rng(1);
  Param& big = set.add("big", {1 << 20});
  fill(big.grad, rng, 1.0f);
  fill(set.add("small", {3, 7}).grad, rng, 1.0f);
  double reference = 0;
  for (const Param& p : set.all())
    for (float g : p.grad) reference += double(g) * g;
  reference = std::sqrt(reference);
  const int saved = omp_get_max_threads();
  std::vector<double> norms;
  for (int threads : {1, 2, 3, 8}) {
    omp_set_num_threads(threads);
    norms.push_back(clip_grad_norm(set, 0.0));
  }
  omp_set_num_threads(saved);
  for (double n : norms) EXPECT_EQ(n, norms[0]) << "bitwise the same at every thread count";
  EXPECT_NEAR(norms[0], reference, 1e-12 * reference);
}

// The update written from the formulas in double, one scalar at a time.
struct ScalarAdamW {
  double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  int t = 0;
  std::map<std::string, std::vector<double>> m, v;
  void step(std::map<std::string, std::vector<double>>& theta,
            const std::map<std::string, std::vector<double>>& grad,
            const std::map<std::string, bool>& decays, double lr) {
    ++t;
    for (auto& [name, th] : theta) {
      auto& mm = m[name];
      auto& vv = v[name];
      mm.resize(th.size(), 0.0);
      vv.resize(th.size(), 0.0);
      for (size_t i = 0; i < th.size(); ++i) {
        const double g = grad.at(name)[i];
        if (decays.at(name)) th[i] -= lr * wd * th[i];
        mm[i] = b1 * mm[i] + (1 - b1) * g;
        vv[i] = b2 * vv[i] + (1 - b2) * g * g;
        const double m_hat = mm[i] / (1 - std::pow(b1, t));
        const double v_hat = vv[i] / (1 - std::pow(b2, t));
        th[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
      }
    }
  }
};

TEST(AdamW, MatchesScalarDoubleReference) {
  ParamSet set = make_params(3);
  const std::vector<float> frozen_before =
      set.get("model.layers.0.mlp.gate.e_score_correction_bias").value;
  std::map<std::string, std::vector<double>> theta;
  std::map<std::string, bool> decays;
  for (const Param& p : set.all())
    if (p.trainable) {
      theta[p.name].assign(p.value.begin(), p.value.end());
      decays[p.name] = p.shape.size() >= 2;
    }
  AdamW opt;
  ScalarAdamW ref;
  std::mt19937 rng(4);
  const double lrs[] = {1e-2, 3e-2, 2e-2, 5e-3, 1e-2, 2e-2};
  for (double lr : lrs) {
    random_grads(set, rng);
    std::map<std::string, std::vector<double>> grad;
    for (const Param& p : set.all()) grad[p.name].assign(p.grad.begin(), p.grad.end());
    opt.step(set, lr);
    ref.step(theta, grad, decays, lr);
    for (const auto& [name, th] : theta) {
      const Param& p = set.get(name);
      const auto& s = opt.state().at(name);
      for (size_t i = 0; i < th.size(); ++i) {
        // float32 arithmetic vs double: a few float ulps of theta plus of the update.
        EXPECT_NEAR(p.value[i], th[i], 1e-6 * std::max(1.0, std::fabs(th[i])))
            << name << "[" << i << "] step " << ref.t;
        EXPECT_NEAR(s.exp_avg[i], ref.m[name][i], 1e-6 * std::max(1.0, std::fabs(ref.m[name][i])));
        EXPECT_NEAR(s.exp_avg_sq[i], ref.v[name][i], 1e-6 * std::max(1.0, ref.v[name][i]));
      }
    }
  }
  EXPECT_EQ(opt.step_count(), 6);
  EXPECT_EQ(set.get("model.layers.0.mlp.gate.e_score_correction_bias").value, frozen_before);
  EXPECT_EQ(opt.state().count("model.layers.0.mlp.gate.e_score_correction_bias"), 0u)
      << "no state for buffers";
}

TEST(AdamW, WeightDecayOnMatricesOnly) {
  ParamSet set = make_params(5);
  const ParamSet before = set;
  AdamW opt({.weight_decay = 0.5});
  opt.step(set, 0.1);  // zero gradients: m = v = 0, so only the decay moves theta
  const Param& w = set.get("model.layers.0.mlp.gate.weight");
  for (size_t i = 0; i < w.value.size(); ++i)
    EXPECT_EQ(w.value[i], before.get(w.name).value[i] * float(1 - 0.1 * 0.5));
  EXPECT_EQ(set.get("model.norm.weight").value, before.get("model.norm.weight").value);
}

TEST(AdamW, BadConfigIsAClearError) {
  expect_error([] { AdamW({.beta1 = 1.0}); }, {"beta1 1"});
  expect_error([] { AdamW({.beta2 = -0.1}); }, {"beta2 -0.1"});
  expect_error([] { AdamW({.eps = -1}); }, {"eps -1"});
  expect_error([] { AdamW({.weight_decay = NAN}); }, {"weight decay nan"});
  ParamSet set = make_params(1);
  AdamW opt;
  expect_error([&] { opt.step(set, -1e-3); }, {"learning rate -0.001"});
}

TEST(AdamW, SaveLoadResumesBitForBit) {
  TempDir dir;
  ParamSet set = make_params(7);
  AdamW opt({.beta2 = 0.99});
  std::mt19937 rng(8);
  for (int s = 0; s < 3; ++s) {
    random_grads(set, rng);
    opt.step(set, 1e-2);
  }
  const std::string path = dir.file("optimizer.safetensors");
  opt.save(path, set);
  const io::SafetensorsFile file(path);
  EXPECT_EQ(file.metadata().at("step"), "3");
  EXPECT_EQ(file.tensors().size(), 4u) << "two moments per trainable param, none for the buffer";

  AdamW resumed({.beta2 = 0.99});
  resumed.load(path, set);
  EXPECT_EQ(resumed.step_count(), 3);
  ParamSet copy = set;
  for (int s = 0; s < 2; ++s) {
    random_grads(set, rng);
    for (Param& p : copy.all()) p.grad = set.get(p.name).grad;
    opt.step(set, 2e-2);
    resumed.step(copy, 2e-2);
  }
  for (const Param& p : set.all()) EXPECT_EQ(p.value, copy.get(p.name).value) << p.name;

  // Before any step the file holds zero moments, and loading it gives step 0.
  AdamW fresh;
  fresh.save(dir.file("fresh.safetensors"), set);
  AdamW loaded;
  loaded.load(dir.file("fresh.safetensors"), set);
  EXPECT_EQ(loaded.step_count(), 0);
  EXPECT_EQ(loaded.state().at("model.norm.weight").exp_avg, std::vector<float>(7, 0.0f));
}

TEST(AdamW, LoadMismatchIsAClearErrorAndKeepsState) {
  TempDir dir;
  ParamSet set = make_params(9);
  AdamW opt;
  opt.step(set, 1e-3);
  opt.save(dir.file("opt.safetensors"), set);

  ParamSet reshaped;
  reshaped.add("model.layers.0.mlp.gate.weight", {3, 5});
  reshaped.add("model.norm.weight", {7});
  AdamW other;
  expect_error([&] { other.load(dir.file("opt.safetensors"), reshaped); },
               {"model.layers.0.mlp.gate.weight.exp_avg", "[5, 3]", "[3, 5]"});
  EXPECT_EQ(other.step_count(), 0) << "unchanged after a failed load";

  ParamSet more = make_params(9);
  more.add("lm_head.weight", {2, 2});
  expect_error([&] { other.load(dir.file("opt.safetensors"), more); },
               {"lm_head.weight.exp_avg", "[2, 2]"});
  ParamSet fewer;
  fewer.add("model.norm.weight", {7});
  expect_error([&] { other.load(dir.file("opt.safetensors"), fewer); },
               {"model.layers.0.mlp.gate.weight.exp_avg", "no trainable parameter"});
  io::write_safetensors(dir.file("not_adamw.safetensors"), {});
  expect_error([&] { other.load(dir.file("not_adamw.safetensors"), set); },
               {"not an AdamW state file"});
}

// torch.optim.AdamW (two groups: decay for ndim >= 2, none for vectors), without and with
// clip_grad_norm_, run by tests/reference/adamw_torch.py on the same initial values and gradients.
TEST(AdamW, MatchesTorch) {
  const std::string py = "/usr/bin/python3";
  if (!std::filesystem::exists(py) ||
      std::system((py + " -c 'import torch, numpy' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << py << " cannot import torch and numpy: no PyTorch cross-check";
  TempDir dir;
  ParamSet start;
  std::mt19937 rng(11);
  fill(start.add("w", {64, 33}).value, rng, 0.5f);  // vectorised body and a scalar tail in torch
  fill(start.add("b", {33}).value, rng, 0.5f);
  fill(start.add("big", {40000, 3}).value, rng, 0.02f);  // above the OpenMP threshold here
  const std::vector<double> lrs = {1e-3, 3e-2, 2e-2, 1e-2, 5e-3};
  const double max_norm = 1.0;

  std::vector<std::vector<float>> grads;  // [step * params + param]
  std::vector<io::TensorToWrite> in;
  grads.reserve(start.size() * lrs.size());
  for (const Param& p : start.all())
    in.push_back({"p." + p.name, "F32", p.shape, p.value.data(), p.value.size() * 4});
  for (size_t s = 0; s < lrs.size(); ++s)
    for (const Param& p : start.all()) {
      auto& g = grads.emplace_back(p.value.size());
      fill(g, rng, s % 2 ? 0.001f : 0.5f);  // alternately clipped and below max_norm
      in.push_back(
          {"g" + std::to_string(s) + "." + p.name, "F32", p.shape, g.data(), g.size() * 4});
    }
  io::write_safetensors(dir.file("in.safetensors"), in);
  std::string lr_list;
  for (double lr : lrs) lr_list += (lr_list.empty() ? "" : ",") + fmt::format("{}", lr);
  const std::string out_path = dir.file("out.safetensors");
  const std::string cmd =
      fmt::format("{} {}/tests/reference/adamw_torch.py {} {} {} {} > {} 2>&1", py, SY_SOURCE_DIR,
                  dir.file("in.safetensors"), out_path, lr_list, max_norm, dir.file("log.txt"));
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const io::SafetensorsFile out(out_path);
  std::map<std::string, const io::TensorInfo*> torch_values;
  for (const auto& t : out.tensors()) torch_values[t.name] = &t;
  std::string capability;
  std::ifstream(out_path + ".capability") >> capability;
  std::ifstream norms_in(out_path + ".norms");

  for (const bool clip : {false, true}) {
    ParamSet set = start;
    AdamW opt;
    for (size_t s = 0; s < lrs.size(); ++s) {
      for (size_t i = 0; i < set.size(); ++i) set.all()[i].grad = grads[s * set.size() + i];
      if (clip) {
        double torch_norm = 0;
        norms_in >> torch_norm;
        // torch sums in float32; this sums in double: they agree to float accuracy.
        EXPECT_NEAR(clip_grad_norm(set, max_norm), torch_norm, 2e-6 * torch_norm)
            << "grad norm, step " << s + 1;
      }
      opt.step(set, lrs[s]);
    }
    const std::string tag = clip ? "clip" : "noclip";
    size_t total = 0, identical = 0;
    double worst = 0;
    for (const Param& p : set.all())
      for (const auto& [kind, mine] : {std::pair{"p", &p.value},
                                       {"m", &opt.state().at(p.name).exp_avg},
                                       {"v", &opt.state().at(p.name).exp_avg_sq}}) {
        const std::string name = tag + "." + kind + "." + p.name;
        ASSERT_TRUE(torch_values.count(name)) << name;
        const float* ref = static_cast<const float*>(torch_values[name]->data);
        double scale = 1e-30;  // differences relative to the tensor's largest magnitude
        for (size_t i = 0; i < mine->size(); ++i)
          scale = std::max(scale, std::fabs(double(ref[i])));
        for (size_t i = 0; i < mine->size(); ++i) {
          worst = std::max(worst, std::fabs(double((*mine)[i]) - ref[i]) / scale);
          identical += (*mine)[i] == ref[i];
          ++total;
        }
      }
    std::cout << "[ torch    ] " << tag << ": " << identical << " of " << total
              << " values bitwise equal, worst relative difference " << worst
              << " (torch CPU capability " << capability << ")\n";
    // torch's AVX2 / AVX-512 kernels round as adamw.cpp does (fused multiply-adds included); with
    // clipping the coefficient differs by float32 ulps (torch's float norm vs a double one).
    if (!clip && capability.rfind("AVX", 0) == 0) {
      EXPECT_EQ(identical, total) << "bitwise equal to torch without clipping";
    }
    EXPECT_LT(worst, 1e-5) << tag;
  }
}

}  // namespace
}  // namespace sy::train
