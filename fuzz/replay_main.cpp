// Replays saved inputs through a fuzz target without libFuzzer (any compiler, any build):
//   replay_<target> FILE|DIR...      every file (directories recursively); exit 0 when each
//                                    one was accepted or refused with a sy::Error, and every
//                                    file named valid* was accepted
//   replay_<target> --seeds DIR      writes the target's seed corpus
// SY_FUZZ_VERBOSE=1 prints each refusal's message.
// The ordinary test suite runs it on fuzz/regressions/<target>/ (under ASan + UBSan in CI), so
// every input that once crashed stays a test.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "scratch.h"
#include "target.h"
#include "util/error.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::printf("usage: %s FILE|DIR...   replay inputs\n       %s --seeds DIR   write seeds\n",
                argv[0], argv[0]);
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--seeds") {
    if (argc != 3) {
      std::fprintf(stderr, "--seeds needs one directory\n");
      return 2;
    }
    sy::fuzz::write_seeds(argv[2]);
    return 0;
  }
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path p(argv[i]);
    if (fs::is_directory(p)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path().string());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p.string());
    } else {
      std::fprintf(stderr, "no such input: %s\n", argv[i]);
      return 2;
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "no inputs found: a regression corpus must not be empty\n");
    return 1;
  }
  std::sort(files.begin(), files.end());
  const bool verbose = std::getenv("SY_FUZZ_VERBOSE") != nullptr;
  int refused = 0, wrongly_refused = 0;
  for (const auto& f : files) {
    const std::string bytes = sy::fuzz::read_file(f);
    try {
      sy::fuzz::run_one(bytes);
    } catch (const sy::Error& e) {
      ++refused;
      // Inputs named valid* are correct files: refusing one is a regression too.
      const bool must_pass = fs::path(f).filename().string().starts_with("valid");
      wrongly_refused += must_pass;
      if (verbose || must_pass)
        std::printf("%s: refused%s: %s\n", f.c_str(), must_pass ? " (but it is valid)" : "",
                    e.what());
    }
  }
  std::printf("%zu inputs replayed: %zu accepted, %d refused with a clear error\n", files.size(),
              files.size() - size_t(refused), refused);
  return wrongly_refused ? 1 : 0;
}
