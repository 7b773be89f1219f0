// Kernel benchmark: GEMV read bandwidth (BF16/F16/F32) as a fraction of the probed read
// bandwidth, the stream-vs-sgemm crossover in activation rows, and prefill matmul GFLOP/s
// against plain cblas_sgemm on float32. Prints a table; --json writes the figures.
// Run twice to see the OpenBLAS core-type effect:
//   bench_kernels                                  (re-execs with a fast OPENBLAS_CORETYPE)
//   SWITCHYARD_KEEP_OPENBLAS_CORETYPE=1 OPENBLAS_CORETYPE=Haswell bench_kernels
#include <cblas.h>

#include <hwy/targets.h>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/arith_peak.h"
#include "common/bandwidth.h"
#include "common/timing.h"
#include "ops/blas_env.h"
#include "ops/gemm_bf16.h"
#include "ops/gemm_w8a8.h"
#include "ops/gemv_int8.h"
#include "ops/kernels.h"
#include "ops/matmul.h"
#include "ops/repack.h"
#include "ops/threads.h"

namespace {

using sy::DType;
using sy::ops::WeightView;
using Json = nlohmann::json;

constexpr size_t kArenaBytes = size_t(512) << 20;

// One arena of weight bytes, first-touched once (fresh pages are slow on VMs), reused by
// every case: decode-sized matrices are cycled through several copies so they come from
// DRAM as in a real model, not from L3.
struct Arena {
  uint16_t* data = nullptr;
  Arena() {
    data = static_cast<uint16_t*>(std::aligned_alloc(4096, kArenaBytes));
    const size_t count = kArenaBytes / 2;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; ++i) {
      // 0x3000..0x3fff: finite, normal values read as BF16, F16, or (pairs) F32.
      data[i] = uint16_t(0x3000 | ((i * 2654435761u) >> 20 & 0xfff));
    }
  }
  ~Arena() {
    std::free(data);
  }
};

struct Shape {
  int64_t rows, cols;
};

double median_probe(int threads) {
  return sy::bench::probe_read_bandwidth(threads).gbps_median;
}

// Each case is judged against a probe taken right before it with the same thread count:
// this VM's 2-thread bandwidth switches between ~35 and ~55 GB/s over minutes.
Json bench_gemv(const Arena& arena, const std::vector<Shape>& shapes,
                const std::vector<int>& threads, int reps) {
  Json out = Json::array();
  std::printf("\nGEMV y = W x (n = 1), weights cycled through copies totalling <= 512 MiB\n");
  std::printf("%-11s %-13s %3s %9s %9s %9s %8s\n", "dtype", "rows x cols", "thr", "us/call", "GB/s",
              "probe", "fraction");
  // The block types run their int8 kernels where the CPU has VNNI (else the float ones); their
  // bytes are the arena's pattern, whose f16 scales are finite and normal. BF16 runs the
  // AVX512_BF16 kernel where the CPU has it (row-major: repacked on each call, as offloaded
  // experts are). "repacked": the same bytes read as the 16-row interleaved layout
  // (ops/repack.h; same size, scales still f16), as the model loader prepares BF16 and block
  // matrices.
  struct Case {
    DType dt;
    bool repacked;
  };
  std::vector<Case> cases;
  for (DType dt : {DType::BF16, DType::F16, DType::F32, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                   DType::Q6_K, DType::MXFP4}) {
    cases.push_back({dt, false});
    if (sy::ops::repack_enabled(dt)) cases.push_back({dt, true});
  }
  for (const auto [dt, repacked] : cases) {
    const std::string label = std::string(sy::dtype_name(dt)) + (repacked ? " repacked" : "");
    for (const Shape& s : shapes) {
      // Bytes read per call (the repacked Q4_K layout holds its scales unpacked: 148 / 144).
      const size_t bytes = repacked ? sy::ops::packed_bytes(WeightView{dt, s.rows, s.cols, nullptr})
                                    : sy::dtype_bytes(dt, s.rows * s.cols);
      const int copies = int(std::max<size_t>(1, std::min<size_t>(64, kArenaBytes / bytes)));
      std::vector<float> x(size_t(s.cols), 0.01f), y(size_t(s.rows));
      for (size_t t = 0; t < threads.size(); ++t) {
        sy::ops::set_num_threads(threads[t]);
        const double probe =
            sy::bench::probe_read_bandwidth(threads[t], size_t(512) << 20, 5).gbps_median;
        const auto timing = sy::bench::time_median(
            [&] {
              for (int c = 0; c < copies; ++c) {
                WeightView w{dt, s.rows, s.cols,
                             reinterpret_cast<const uint8_t*>(arena.data) + c * bytes};
                if (repacked) w.packed = w.data;
                sy::ops::gemv(w, x.data(), y.data());
              }
            },
            2, reps);
        const double per_call = timing.median_s / copies;
        const double gbps = double(bytes) / per_call * 1e-9;
        const double frac = gbps / probe;
        std::printf("%-11s %5ldx%-7ld %3d %9.1f %9.1f %9.1f %7.0f%%\n", label.c_str(), long(s.rows),
                    long(s.cols), threads[t], per_call * 1e6, gbps, probe, 100 * frac);
        out.push_back({{"dtype", sy::dtype_name(dt)},
                       {"repacked", repacked},
                       {"rows", s.rows},
                       {"cols", s.cols},
                       {"threads", threads[t]},
                       {"us_per_call", per_call * 1e6},
                       {"gbps", gbps},
                       {"probe_gbps", probe},
                       {"fraction_of_probe", frac},
                       {"copies", copies},
                       {"gbps_min", double(bytes) * copies / timing.max_s * 1e-9},
                       {"gbps_max", double(bytes) * copies / timing.min_s * 1e-9}});
      }
    }
  }
  return out;
}

// Stream kernel vs widen + sgemm as the number of activation rows grows (BF16 weights).
Json bench_crossover(const Arena& arena, int threads, int reps) {
  Json out = Json::array();
  for (const Shape& s : {Shape{2816, 1024}, Shape{1024, 2816}}) {
    const WeightView w{DType::BF16, s.rows, s.cols, arena.data};
    std::printf("\nStream vs sgemm path, BF16 %ldx%ld, %d threads (GFLOP/s)\n", long(s.rows),
                long(s.cols), threads);
    // BF16 arithmetic (gemm_bf16.h) on the loader's repacked copy, and repacking per call.
    const bool bf16 = sy::ops::detail::bf16_dot_enabled();
    WeightView packed = w;
    if (bf16) packed.packed = w.data;  // the arena's bytes, read as the repacked layout
    std::printf("%5s %10s %10s %12s %12s\n", "n", "stream", "sgemm", bf16 ? "bf16 packed" : "",
                bf16 ? "bf16 per call" : "");
    sy::ops::set_num_threads(threads);
    for (int64_t n : {1, 2, 4, 8, 16, 32, 64, 128, 512, 2048}) {
      std::vector<float> x(size_t(n * s.cols), 0.01f), y(size_t(n * s.rows));
      const double flops = 2.0 * double(n) * double(s.rows) * double(s.cols);
      const auto ts = sy::bench::time_median(
          [&] {
            sy::ops::detail::matmul_stream(w, x.data(), n, s.cols, y.data(), s.rows, threads);
          },
          3, reps);
      const auto tg = sy::bench::time_median(
          [&] { sy::ops::detail::matmul_sgemm(w, x.data(), n, s.cols, y.data(), s.rows, threads); },
          3, reps);
      auto bf16_gflops = [&](const WeightView& v) {
        if (!bf16) return 0.0;
        const auto t = sy::bench::time_median(
            [&] {
              sy::ops::detail::matmul_bf16(v, x.data(), n, s.cols, y.data(), s.rows, threads);
            },
            3, reps);
        return flops / t.median_s * 1e-9;
      };
      const double gp = bf16_gflops(packed), gb = bf16_gflops(w);
      std::printf("%5ld %10.1f %10.1f %12.1f %12.1f\n", long(n), flops / ts.median_s * 1e-9,
                  flops / tg.median_s * 1e-9, gp, gb);
      out.push_back({{"rows", s.rows},
                     {"cols", s.cols},
                     {"n", n},
                     {"threads", threads},
                     {"stream_gflops", flops / ts.median_s * 1e-9},
                     {"sgemm_gflops", flops / tg.median_s * 1e-9},
                     {"bf16_packed_gflops", gp},
                     {"bf16_per_call_gflops", gb}});
    }
  }
  return out;
}

// Prefill: Y[m, rows] = X[m, cols] W^T through sy::ops::matmul, vs cblas_sgemm on float32
// W with OpenBLAS's own threading (what a caller of plain OpenBLAS would get). Q8_0 runs
// ggml's blocks through the int8 block kernel; I8_ROW is W8A8 (gemm_w8a8.h, ReaLB's int8
// format), quantized from the BF16 arena first.
Json bench_matmul(const Arena& arena, const std::vector<int>& threads, int reps) {
  Json out = Json::array();
  std::printf("\nPrefill matmul GFLOP/s (M x N x K = tokens x out x in)\n");
  // BF16: what a loaded model runs (the AVX512_BF16 kernel on the repacked copy where the CPU
  // has it); "BF16 f32": the float32 path (BF16 panels widened, then sgemm), SY_BF16_DOT=0's.
  std::printf("%-16s %3s %9s %9s %9s %9s %9s %9s %12s\n", "M x N x K", "thr", "BF16", "BF16 f32",
              "F16", "F32", "Q8_0", "W8A8", "cblas f32");
  for (int64_t m : {128, 512, 2048})
    for (const Shape& s : {Shape{2816, 1024}, Shape{1024, 2816}}) {
      std::vector<uint8_t> i8(size_t(s.rows) * sy::dtype_bytes(DType::I8_ROW, s.cols));
      sy::ops::quantize_rows_i8(WeightView{DType::BF16, s.rows, s.cols, arena.data}, i8.data(), 2);
      // W8A8 as ReaLB converts it: repacked where the CPU has VNNI (gemm_w8a8_packed.h).
      std::unique_ptr<sy::ops::PackedWeight> i8_packed;
      if (sy::ops::repack_enabled(DType::I8_ROW))
        i8_packed = std::make_unique<sy::ops::PackedWeight>(
            WeightView{DType::I8_ROW, s.rows, s.cols, i8.data()});
      std::vector<float> x(size_t(m * s.cols)), y(size_t(m * s.rows));
      for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 17) - 8) * 0.01f;
      const double flops = 2.0 * double(m) * double(s.rows) * double(s.cols);
      for (int t : threads) {
        sy::ops::set_num_threads(t);
        Json row = {{"m", m}, {"n", s.rows}, {"k", s.cols}, {"threads", t}};
        double g[5];
        int i = 0;
        for (DType dt : {DType::BF16, DType::F16, DType::F32, DType::Q8_0, DType::I8_ROW}) {
          WeightView w{dt, s.rows, s.cols,
                       dt == DType::I8_ROW ? static_cast<const void*>(i8.data()) : arena.data};
          if (dt == DType::BF16 && sy::ops::repack_enabled(dt)) w.packed = w.data;
          if (dt == DType::I8_ROW && i8_packed) w.packed = i8_packed->data();
          const auto tm =
              sy::bench::time_median([&] { sy::ops::matmul(w, x.data(), m, y.data()); }, 3, reps);
          g[i++] = flops / tm.median_s * 1e-9;
          row[std::string("gflops_") + std::string(sy::dtype_name(dt))] = g[i - 1];
        }
        const WeightView wb{DType::BF16, s.rows, s.cols, arena.data};
        const double gf =
            flops /
            sy::bench::time_median(
                [&] {
                  sy::ops::detail::matmul_sgemm(wb, x.data(), m, s.cols, y.data(), s.rows, t);
                },
                3, reps)
                .median_s *
            1e-9;
        row["gflops_BF16_f32_path"] = gf;
        const auto* wf = reinterpret_cast<const float*>(arena.data);
        openblas_set_num_threads(t);
        const auto tc = sy::bench::time_median(
            [&] {
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(s.rows), int(s.cols),
                          1.0f, x.data(), int(s.cols), wf, int(s.cols), 0.0f, y.data(),
                          int(s.rows));
            },
            3, reps);
        sy::ops::set_num_threads(t);  // back to single-threaded OpenBLAS
        const double gc = flops / tc.median_s * 1e-9;
        row["gflops_cblas_f32"] = gc;
        std::printf("%4ldx%5ldx%5ld %3d %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %12.1f\n", long(m),
                    long(s.rows), long(s.cols), t, g[0], gf, g[1], g[2], g[3], g[4], gc);
        out.push_back(row);
      }
    }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  sy::ops::prefer_fast_blas(argc, argv);
  CLI::App app{"Switchyard kernel benchmark: GEMV GB/s vs probed read bandwidth, matmul GFLOP/s"};
  std::string json_path;
  int reps = 7;
  bool quick = false;
  std::vector<int> threads = {1, 2};
  app.add_option("--json", json_path, "write the figures to this JSON file");
  app.add_option("--reps", reps, "timed repetitions per case (median reported)")
      ->check(CLI::Range(5, 1000));
  app.add_option("--threads", threads, "thread counts to measure")->delimiter(',');
  app.add_flag("--quick", quick, "only the smallest GEMV shapes (smoke run)");
  std::vector<std::string> sections = {"gemv", "crossover", "matmul"};
  app.add_option("--sections", sections, "which parts to run")
      ->delimiter(',')
      ->check(CLI::IsMember({"gemv", "crossover", "matmul"}));
  CLI11_PARSE(app, argc, argv);

  const char* coretype_env = std::getenv("OPENBLAS_CORETYPE");
  const int64_t best_target = hwy::SupportedTargets() & HWY_TARGETS;
  std::printf("SIMD target %s, OpenBLAS core %s (OPENBLAS_CORETYPE=%s)\n",
              hwy::TargetName(best_target & -best_target), sy::ops::blas_core_name().c_str(),
              coretype_env ? coretype_env : "(unset)");

  Json peaks = Json::array();
  for (int t : threads) {
    const sy::bench::ArithPeak p = sy::bench::measure_arith_peak(t);
    std::printf("arithmetic peak %dT: f32 FMA %.0f GFLOP/s, bf16 dot %.0f GFLOP/s\n", t,
                p.f32_gflops, p.bf16_gflops);
    peaks.push_back({{"threads", t}, {"f32_gflops", p.f32_gflops}, {"bf16_gflops", p.bf16_gflops}});
  }
  const Arena arena;
  std::vector<double> probe_before, probe_after;
  for (int t : threads) probe_before.push_back(median_probe(t));
  std::printf("read bandwidth probe:");
  for (size_t i = 0; i < threads.size(); ++i)
    std::printf("  %dT %.1f GB/s", threads[i], probe_before[i]);
  std::printf("\n");

  std::vector<Shape> shapes = {{1024, 2816}, {2816, 1024}, {32000, 1024}, {14336, 4096}};
  if (quick) shapes.resize(2);
  auto wanted = [&](const char* name) {
    return std::find(sections.begin(), sections.end(), name) != sections.end();
  };
  Json gemv = wanted("gemv") ? bench_gemv(arena, shapes, threads, reps) : Json::array();
  for (int t : threads) probe_after.push_back(median_probe(t));
  std::printf("probe after GEMV:");
  for (size_t i = 0; i < threads.size(); ++i)
    std::printf("  %dT %.1f GB/s", threads[i], probe_after[i]);
  std::printf("\n");
  Json crossover =
      wanted("crossover") ? bench_crossover(arena, threads.back(), reps) : Json::array();
  Json matmul = wanted("matmul") ? bench_matmul(arena, threads, reps) : Json::array();

  if (!json_path.empty()) {
    Json probes = Json::array();
    for (size_t i = 0; i < threads.size(); ++i)
      probes.push_back({{"threads", threads[i]},
                        {"before_gbps", probe_before[i]},
                        {"after_gbps", probe_after[i]}});
    Json doc = {{"bench", "bench_kernels"},
                {"simd_target", hwy::TargetName(best_target & -best_target)},
                {"openblas_core", sy::ops::blas_core_name()},
                {"openblas_coretype_env", coretype_env ? coretype_env : ""},
                {"reps", reps},
                {"probe", probes},
                {"arith_peak", peaks},
                {"gemv", gemv},
                {"crossover", crossover},
                {"matmul", matmul}};
    std::ofstream f(json_path);
    f << doc.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "bench_kernels: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}
