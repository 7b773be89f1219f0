// Prefill and decode throughput of a whole MoE model, next to the machine's limits measured in
// the same run. No other engine runs in this program: the ratio against llama.cpp comes from
// bench/llama_cpp_side_by_side.sh, which runs both engines on the same GGUF file in one run.
//   bench_inference --shape A --dtype BF16 --threads 1,2 --json out.json
// Decode GB/s = weight bytes read per token x tokens/s, reported as a fraction of a read-
// bandwidth probe taken right before and after the model runs, in the same process.
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/bandwidth.h"
#include "common/timing.h"
#include "io/file_util.h"
#include "model/model.h"
#include "ops/blas_env.h"
#include "ops/threads.h"
#include "synth/synthetic_checkpoint.h"

namespace {

using namespace sy;

std::vector<int32_t> prompt_tokens(int64_t n, int64_t vocab) {
  std::vector<int32_t> t;
  uint64_t x = 12345;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t.push_back(int32_t((x >> 33) % uint64_t(vocab)));
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  ops::prefer_fast_blas(argc, argv);
  CLI::App app{"Prefill and decode tokens/s of a MoE model (folder or GGUF) vs memory bandwidth"};
  std::string shape = "A", dtype = "BF16", model_dir, json_path, work_dir;
  std::vector<int> threads = {1, 2};
  int prompt_len = 128, decode_len = 32, reps = 3;
  app.add_option("--shape", shape, "Reference shape from machine.md: A or B")
      ->capture_default_str();
  app.add_option("--dtype", dtype, "Weight dtype of the generated model: BF16, F16, F32")
      ->capture_default_str();
  app.add_option("--model", model_dir, "Benchmark this checkpoint instead of a generated one");
  app.add_option("--work-dir", work_dir, "Where the generated model is kept (default: /tmp)");
  app.add_option("--threads", threads, "Thread counts to measure")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--prompt", prompt_len, "Prompt tokens for prefill")->capture_default_str();
  app.add_option("--decode", decode_len, "Tokens decoded per repetition")->capture_default_str();
  app.add_option("--reps", reps, "Timed repetitions (median reported)")->capture_default_str();
  app.add_option("--json", json_path, "Write the results as JSON");
  CLI11_PARSE(app, argc, argv);

  try {
    if (model_dir.empty()) {
      model_dir = (work_dir.empty() ? std::string("/tmp") : work_dir) +
                  fmt::format("/switchyard-bench-shape-{}-{}", shape, dtype);
      if (!io::file_exists(model_dir + "/config.json")) {
        fmt::print("generating shape {} with {} weights in {} ...\n", shape, dtype, model_dir);
        synth::SyntheticSpec spec = synth::reference_shape(shape);
        spec.dtype = dtype;
        spec.tokenizer = "none";
        synth::write_synthetic_checkpoint(spec, model_dir);
      }
    }
    const model::Model model = model::Model::load(model_dir);
    const auto& cfg = model.config();
    const double bytes_per_token = double(model::decode_bytes_per_token(cfg, model.weights()));
    const auto prompt = prompt_tokens(prompt_len, cfg.vocab_size);
    fmt::print("model {} ({}), {} layers, {} experts top-{}, {:.1f} MB read per decoded token\n",
               model_dir, cfg.architecture, cfg.num_layers, cfg.router.num_experts,
               cfg.router.top_k, bytes_per_token / 1e6);
    fmt::print("OpenBLAS core: {}\n\n", ops::blas_core_name());

    nlohmann::json results = nlohmann::json::array();
    fmt::print("{:>7} {:>12} {:>11} {:>9} {:>9} {:>11} {:>11}\n", "threads", "prefill t/s",
               "decode t/s", "GB/s", "probe", "of probe", "prefill GF/s");
    for (int n : threads) {
      ops::set_num_threads(n);
      const auto probe_before = bench::probe_read_bandwidth(n);
      model::Workspace ws;
      std::vector<float> logits(size_t(cfg.vocab_size));
      model::KvCache cache(cfg, prompt_len + decode_len);
      auto prefill = [&] {
        cache.clear();
        model::SequenceChunk chunk{&cache, prompt};
        model.forward({&chunk, 1}, model::LogitsFor::kLastToken, logits.data(), ws);
      };
      const bench::Timing tp = bench::time_median(prefill, 1, reps);
      auto decode = [&] {
        prefill();
        const auto t0 = std::chrono::steady_clock::now();
        int32_t next = 1;
        for (int i = 0; i < decode_len; ++i) {
          model::SequenceChunk step{&cache, {&next, 1}};
          model.forward({&step, 1}, model::LogitsFor::kLastToken, logits.data(), ws);
          next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        }
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      };
      decode();  // warm-up
      std::vector<double> dt;
      for (int r = 0; r < reps; ++r) dt.push_back(decode());
      std::sort(dt.begin(), dt.end());
      const double decode_s = dt[dt.size() / 2];
      const auto probe_after = bench::probe_read_bandwidth(n);
      const double probe = 0.5 * (probe_before.gbps_median + probe_after.gbps_median);

      const double prefill_tps = prompt_len / tp.median_s;
      const double decode_tps = decode_len / decode_s;
      const double gbps = bytes_per_token * decode_tps / 1e9;
      const auto params = model::count_params(cfg);
      const double prefill_gflops = 2.0 * double(params.active_per_token) * prefill_tps / 1e9;
      fmt::print("{:>7} {:>12.1f} {:>11.1f} {:>9.1f} {:>9.1f} {:>10.0f}% {:>11.1f}\n", n,
                 prefill_tps, decode_tps, gbps, probe, 100.0 * gbps / probe, prefill_gflops);
      results.push_back({{"threads", n},
                         {"prefill_tokens_per_s", prefill_tps},
                         {"prefill_s_median", tp.median_s},
                         {"prefill_s_min", tp.min_s},
                         {"prefill_s_max", tp.max_s},
                         {"decode_tokens_per_s", decode_tps},
                         {"decode_s_all", dt},
                         {"decode_gbps", gbps},
                         {"probe_gbps_before", probe_before.gbps_median},
                         {"probe_gbps_after", probe_after.gbps_median},
                         {"decode_fraction_of_probe", gbps / probe},
                         {"prefill_gflops", prefill_gflops}});
    }
    fmt::print(
        "targets (issue 4, shape A BF16, 2 threads): decode >= 106 t/s and >= 85% of probe; "
        "prefill >= 571 t/s\n");
    if (!json_path.empty()) {
      nlohmann::json j = {{"model", model_dir},
                          {"shape", shape},
                          {"dtype", dtype},
                          {"prompt_tokens", prompt_len},
                          {"decode_tokens", decode_len},
                          {"reps", reps},
                          {"bytes_per_decoded_token", bytes_per_token},
                          {"openblas_core", ops::blas_core_name()},
                          {"results", results}};
      io::write_text_file_atomic(json_path, j.dump(2) + "\n");
      fmt::print("wrote {}\n", json_path);
    }
  } catch (const sy::Error& e) {
    fmt::print(stderr, "bench_inference: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
