// A fuzz target: one parser of an untrusted file, driven by raw bytes. Each target file in
// fuzz/targets/ defines these two functions; fuzz/libfuzzer_entry.cpp makes it a libFuzzer
// program (SY_FUZZ builds) and fuzz/replay_main.cpp a plain program that replays saved inputs
// (the regression corpus, run by the ordinary test suite) and writes the seed corpus.
#pragma once

#include <string>
#include <string_view>

namespace sy::fuzz {

// Feeds one input to the parser and exercises what it returns. A sy::Error is a clean refusal
// (the caller catches it); any other exception, crash, sanitizer report, leak or hang is a
// finding.
void run_one(std::string_view bytes);

// Writes valid inputs made by the project (synthetic checkpoints of every family, the files a
// training run saves) into `dir`, one file per input.
void write_seeds(const std::string& dir);

}  // namespace sy::fuzz
