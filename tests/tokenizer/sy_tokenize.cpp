// Command-line driver for the tokenizer reference test (tests/reference/test_tokenizer_hf.sh):
//   sy_tokenize encode TOKENIZER_JSON TEXT_FILE   -> {"ids": [...], "decoded": "..."} on stdout
//   sy_tokenize train [--style bytelevel|sentencepiece] [--preset qwen2|llama3|gpt2|deepseek]
//                     [--vocab N] [--special TOKEN]... CORPUS OUT_JSON
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) sy::fail("cannot open '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int encode(int argc, char** argv) {
  if (argc != 4) sy::fail("usage: sy_tokenize encode TOKENIZER_JSON TEXT_FILE");
  const sy::Tokenizer tok = sy::Tokenizer::from_file(argv[2]);
  const std::vector<int32_t> ids = tok.encode(read_file(argv[3]));
  nlohmann::json out = {{"ids", ids}, {"decoded", tok.decode(ids)}};
  std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return 0;
}

int train(int argc, char** argv) {
  sy::BpeTrainOptions o;
  std::vector<std::string> positional;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) sy::fail("{} needs a value", arg);
      return argv[++i];
    };
    if (arg == "--style") {
      const std::string v = value();
      if (v == "bytelevel")
        o.style = sy::BpeStyle::ByteLevel;
      else if (v == "sentencepiece")
        o.style = sy::BpeStyle::SentencePiece;
      else
        sy::fail("unknown --style '{}'", v);
    } else if (arg == "--preset") {
      const std::string v = value();
      if (v == "qwen2")
        o.preset = sy::SplitPreset::Qwen2;
      else if (v == "llama3")
        o.preset = sy::SplitPreset::Llama3;
      else if (v == "gpt2")
        o.preset = sy::SplitPreset::Gpt2;
      else if (v == "deepseek")
        o.preset = sy::SplitPreset::DeepSeek;
      else
        sy::fail("unknown --preset '{}'", v);
    } else if (arg == "--vocab") {
      o.vocab_size = std::stoll(value());
    } else if (arg == "--special") {
      o.special_tokens.push_back(value());
    } else if (arg.starts_with("--")) {
      sy::fail("unknown flag '{}'", arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) sy::fail("usage: sy_tokenize train [flags] CORPUS OUT_JSON");
  const std::string corpus = read_file(positional[0]);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string json = sy::train_bpe_tokenizer_json(corpus, o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ofstream(positional[1], std::ios::binary) << json;
  const sy::Tokenizer tok = sy::Tokenizer::from_json_string(json, positional[1]);
  std::cerr << "trained " << tok.vocab_size() << " tokens on " << corpus.size() << " bytes in "
            << secs << " s\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "encode") return encode(argc, argv);
    if (mode == "train") return train(argc, argv);
    std::cerr << "usage: sy_tokenize encode|train ...\n";
    return 2;
  } catch (const sy::Error& e) {
    std::cerr << "sy_tokenize: " << e.what() << "\n";
    return 1;
  }
}
