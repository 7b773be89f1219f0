// switchyard: run, score and inspect Mixture-of-Experts checkpoints on CPU.
#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstring>
#include <string_view>
#include <system_error>
#include <vector>

#include "cli/commands.h"
#include "ops/blas_env.h"
#include "parallel/communicator.h"
#include "util/error.h"

int main(int argc, char** argv) {
  // May re-exec with faster OpenBLAS kernels (and, for training, passive OpenMP waiting).
  const bool training = argc > 1 && std::string_view(argv[1]) == "train";
  sy::ops::prefer_fast_blas(argc, argv, training);
  // Under mpirun every rank runs this same program; MPI starts only then.
  const sy::parallel::Communicator& comm = sy::parallel::Communicator::world(&argc, &argv);
  if (comm.distributed()) {
    // Ranks given different arguments (another -n, --batch, ...) would issue different
    // collective calls and hang: every rank must run the same command line. The model path
    // may differ (a copy per machine); its contents are compared when it loads.
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 1; i < argc; ++i) {
      const std::string_view a = argv[i];
      if (a == "-m" || a == "--model") {
        ++i;
        continue;
      }
      if (a.starts_with("--model=")) continue;
      for (const char c : a) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
      h = (h ^ 0xff) * 0x100000001b3ull;  // argument boundary
    }
    const std::vector<uint64_t> all = comm.all_gather(h);
    for (int r = 1; r < comm.size(); ++r)
      if (all[size_t(r)] != all[0]) {
        if (comm.is_root())
          fmt::print(stderr,
                     "switchyard: error: rank {} was started with other arguments than rank 0; "
                     "under mpirun every rank must run the same command line\n",
                     r);
        return 2;
      }
  }
  CLI::App app{
      "Switchyard: a Mixture-of-Experts engine for CPU.\n"
      "Loads Hugging Face checkpoints (config.json + safetensors + tokenizer.json) of\n"
      "Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, dots.llm1, GLM-4-MoE, Granite-MoE, DeepSeek-V2 / V3,\n"
      "GPT-OSS, ERNIE-4.5-MoE, Phi-3.5-MoE, Hunyuan-MoE, DBRX and Llama 4 (text), and GGUF\n"
      "files of the first four (F32 / F16 / BF16 / Q8_0 / Q4_0 / Q4_K / Q6_K / MXFP4 weights).\n"
      "BF16 weights compute in BF16 on CPUs with AVX512_BF16 (SY_BF16_DOT=0: float32).",
      "switchyard"};
  app.require_subcommand(1);
  sy::cli::register_generate(app);
  sy::cli::register_score(app);
  sy::cli::register_inspect(app);
  sy::cli::register_make_tiny(app);
  sy::cli::register_replay(app);
  sy::cli::register_bench(app);
  sy::cli::register_train(app);
  sy::cli::register_supervise(app);
  sy::cli::register_partition(app);
  sy::cli::register_export(app);
  sy::cli::register_quantize(app);
  sy::cli::register_profile_neurons(app);
  sy::cli::register_tokenize(app);
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known |= sub->get_name() == argv[1];
      names.push_back(sub->get_name());
    }
    if (!known) {
      fmt::print(stderr, "switchyard: error: unknown command '{}' (commands: {}; see --help)\n",
                 argv[1], fmt::join(names, ", "));
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const sy::Error& e) {
    if (comm.distributed()) comm.abort(e.what());  // takes the other ranks down, no hang
    fmt::print(stderr, "switchyard: error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    if (comm.distributed()) comm.abort("out of memory");
    fmt::print(stderr, "switchyard: error: out of memory\n");
    return 1;
  } catch (const std::system_error& e) {
    // The file system or the C++ library refusing an operation (a read-only --out, a write to
    // a full disk through fmt::print): the message names the path or the stream.
    if (comm.distributed()) comm.abort(e.what());
    fmt::print(stderr, "switchyard: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    // A defect (every bad input should have become a sy::Error): still an orderly exit with
    // the message, never an abort.
    const std::string what = std::string(e.what()).substr(0, 300);
    if (comm.distributed()) comm.abort(what);
    fmt::print(stderr, "switchyard: internal error (please report): {}\n", what);
    return 70;
  }
  // Output written to a full disk or a closed stream must not end in success.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    fmt::print(stderr, "switchyard: error: cannot write to standard output: {}\n",
               std::strerror(errno));
    return 1;
  }
  return 0;
}
