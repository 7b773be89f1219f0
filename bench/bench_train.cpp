// Training throughput of Switchyard's trainer on the two configurations of machine.md (T1, T2),
// next to PyTorch on the same machine and thread count, run in the same process run
// (bench/pytorch_train_baseline.py with the tuned environment machine.md gives), and the
// fraction of this machine's sgemm peak the step reaches.
//   bench_train --config T1 --threads 2 --steps 10 [--pytorch] [--json out.json]
// FLOPs per token follow machine.md's "6N" (N = active non-embedding parameters); the
// "model FLOPs" column adds the LM head and attention scores, for the sgemm-peak fraction.
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include <cblas.h>

#include "common/timing.h"
#include "io/file_util.h"
#include "model/config.h"
#include "ops/blas_env.h"
#include "ops/threads.h"
#include "synth/synthetic_checkpoint.h"
#include "train/adamw.h"
#include "train/allocator.h"
#include "train/params.h"
#include "train/train_model.h"

namespace {

using namespace sy;

struct TrainShape {
  int64_t vocab, hidden, layers, heads, experts, top_k, expert_ffn;
};

TrainShape shape_of(const std::string& name) {
  if (name == "T1") return {4096, 256, 6, 8, 8, 2, 512};
  if (name == "T2") return {8192, 512, 8, 8, 8, 2, 1024};
  throw std::runtime_error("unknown --config '" + name + "' (expected T1 or T2)");
}

// sgemm GFLOP/s on square products big enough to reach the kernel's peak: one single-threaded
// product per OpenMP thread at once (OpenBLAS is pinned to one thread and the trainer splits its
// products over OpenMP threads), so the figure is the peak of all the threads together.
double sgemm_peak_gflops(int n) {
  const int nt = ops::num_threads();
  std::vector<std::vector<float>> a(static_cast<size_t>(nt)), b = a, c = a;
  for (int i = 0; i < nt; ++i) {
    a[size_t(i)].assign(size_t(n) * n, 0.5f);
    b[size_t(i)].assign(size_t(n) * n, 0.25f);
    c[size_t(i)].assign(size_t(n) * n, 0.0f);
  }
  const auto t = bench::time_median(
      [&] {
#pragma omp parallel for schedule(static, 1) num_threads(nt)
        for (int i = 0; i < nt; ++i)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a[size_t(i)].data(),
                      n, b[size_t(i)].data(), n, 0.0f, c[size_t(i)].data(), n);
      },
      1, 5);
  return nt * 2.0 * n * n * double(n) / t.median_s / 1e9;
}

// Runs `cmd`, returns its stdout.
std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ops::prefer_fast_blas(argc, argv, /*passive_omp_wait=*/true);
  CLI::App app{"Training tokens/s of Switchyard's trainer vs PyTorch on machine.md's T1 / T2"};
  std::string config_name = "T1", json_path, work_dir = "/tmp";
  std::vector<int> threads = {2};
  int steps = 10, warmup = 2;
  int64_t batch = 8, seq = 256;
  bool pytorch = false, profile = false;
  app.add_option("--config", config_name, "T1 or T2, machine.md's training shapes")
      ->capture_default_str();
  app.add_option("--threads", threads, "Thread counts to measure")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--steps", steps, "Timed optimizer steps")->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed steps first")->capture_default_str();
  app.add_option("--batch", batch, "Sequences per step")->capture_default_str();
  app.add_option("--seq", seq, "Tokens per sequence")->capture_default_str();
  app.add_option("--work-dir", work_dir, "Where the generated model is written")
      ->capture_default_str();
  app.add_flag("--pytorch", pytorch,
               "Also run bench/pytorch_train_baseline.py (same threads) in this run");
  app.add_flag("--profile", profile, "Print the time per phase of a step");
  app.add_option("--json", json_path, "Write the results as JSON");
  CLI11_PARSE(app, argc, argv);

  train::keep_freed_memory();
  const TrainShape ts = shape_of(config_name);
  synth::SyntheticSpec spec;
  spec.family = model::Family::kMixtral;
  spec.vocab_size = ts.vocab;
  spec.hidden_size = ts.hidden;
  spec.num_layers = ts.layers;
  spec.num_heads = spec.num_kv_heads = ts.heads;
  spec.num_experts = ts.experts;
  spec.top_k = ts.top_k;
  spec.expert_ffn = ts.expert_ffn;
  spec.dtype = "F32";
  spec.tokenizer = "none";
  const std::string dir = work_dir + "/sy_bench_train_" + config_name;
  synth::write_synthetic_checkpoint(spec, dir);
  const model::ModelConfig config = model::load_config(dir);
  train::ParamSet params = train::load_params(dir);
  train::TrainModel model(config, params);

  const int64_t H = ts.hidden, L = ts.layers, I = ts.expert_ffn, V = ts.vocab;
  const double n_active = double(L) * (4.0 * H * H + H * ts.experts + ts.top_k * 3.0 * H * I);
  const double flops_6n = 6.0 * n_active;
  // + LM head (6 V H) + attention scores and values (causal: 2 products, ~S/2 keys, x3 for bwd)
  const double flops_model = flops_6n + 6.0 * V * H + double(L) * 6.0 * H * double(seq);
  std::mt19937 rng(1);
  std::vector<int32_t> tokens(size_t(batch * seq));
  for (auto& t : tokens) t = int32_t(rng() % uint64_t(V));

  nlohmann::json results = nlohmann::json::array();
  fmt::print(
      "bench_train {}: vocab {} d {} layers {} heads {} experts {} top-{} expert FFN {}, "
      "batch {} x seq {}; active non-embedding params {:.1f} M; OpenBLAS core {}\n",
      config_name, V, H, L, ts.heads, ts.experts, ts.top_k, I, batch, seq, n_active / 1e6,
      ops::blas_core_name());
  fmt::print("{:>7} {:>10} {:>10} {:>11} {:>12} {:>11} {:>12} {:>10}\n", "threads", "step ms",
             "tokens/s", "PyTorch t/s", "x PyTorch", "GFLOP/s 6N", "sgemm peak", "% of peak");
  for (int th : threads) {
    ops::set_num_threads(th);
    const double peak = sgemm_peak_gflops(1536);
    train::AdamW opt;
    train::LossOptions lo;
    PhaseTimes prof;
    if (profile) model.set_profile(&prof);
    int calls = 0;
    const bench::Timing t = bench::time_median(
        [&] {
          if (calls++ == warmup) prof = PhaseTimes{};  // the timed steps only
          {
            PhaseTimer pt(profile ? &prof : nullptr, "zero grads");
            params.zero_grads();
          }
          model.forward_backward(tokens.data(), nullptr, batch, seq, lo);
          PhaseTimer pt(profile ? &prof : nullptr, "clip + AdamW");
          train::clip_grad_norm(params, 1.0);
          opt.step(params, 1e-4);
        },
        warmup, steps);
    model.set_profile(nullptr);
    const double tps = double(batch * seq) / t.median_s;
    // A ratio against PyTorch only from PyTorch measured in this run (--pytorch).
    double torch_tps = 0;
    if (pytorch) {
      const std::string script =
          (std::filesystem::path(__FILE__).parent_path() / "pytorch_train_baseline.py").string();
      const std::string tmp = work_dir + "/sy_bench_train_torch.json";
      run_command(
          fmt::format("env -u OPENBLAS_CORETYPE MALLOC_MMAP_MAX_=0 "
                      "MALLOC_TRIM_THRESHOLD_=68719476736 OMP_WAIT_POLICY=passive "
                      "/usr/bin/python3 {} --config {} --threads {} --steps {} --batch {} "
                      "--seq {} --json {} >/dev/null 2>&1",
                      script, config_name, th, steps, batch, seq, tmp));
      try {
        const auto j = nlohmann::json::parse(io::read_text_file(tmp));
        torch_tps = j.at("tokens_per_s_median").get<double>();
      } catch (const std::exception& e) {
        fmt::print(stderr, "PyTorch baseline failed ({}): no ratio\n", e.what());
      }
    }
    const double gf6n = flops_6n * tps / 1e9, gfm = flops_model * tps / 1e9;
    const std::string torch_col = torch_tps > 0 ? fmt::format("{:.0f}", torch_tps) : "-";
    const std::string ratio_col = torch_tps > 0 ? fmt::format("{:.2f}x", tps / torch_tps) : "-";
    fmt::print("{:>7} {:>10.1f} {:>10.0f} {:>11} {:>12} {:>11.1f} {:>12.0f} {:>9.0f}%\n", th,
               t.median_s * 1e3, tps, torch_col, ratio_col, gf6n, peak, 100 * gfm / peak);
    if (profile) fmt::print("{}", prof.table(steps));
    results.push_back(
        {{"threads", th},
         {"step_ms_median", t.median_s * 1e3},
         {"step_ms_min", t.min_s * 1e3},
         {"step_ms_max", t.max_s * 1e3},
         {"tokens_per_s", tps},
         {"pytorch_tokens_per_s", torch_tps > 0 ? nlohmann::json(torch_tps) : nlohmann::json()},
         {"ratio_vs_pytorch", torch_tps > 0 ? nlohmann::json(tps / torch_tps) : nlohmann::json()},
         {"gflops_6n", gf6n},
         {"gflops_model", gfm},
         {"sgemm_peak_gflops", peak},
         {"fraction_of_sgemm_peak", gfm / peak}});
  }
  if (!json_path.empty())
    io::write_text_file_atomic(
        json_path,
        nlohmann::json{
            {"config", config_name}, {"batch", batch}, {"seq", seq}, {"results", results}}
            .dump(2));
  std::filesystem::remove_all(dir);
  return 0;
}
