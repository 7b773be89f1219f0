// The fixed parts of the tokenizer.json files the BPE trainer writes (pipelines per style).
#include "tokenizer/bpe_trainer_config.h"

namespace sy {

const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kDeepSeekRegex =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kDeepSeekCjkRegex = R"([一-龥\u3040-ゟ゠-ヿ]+)";

static ojson split(const std::string& regex) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

static ojson byte_level(bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", false},
          {"use_regex", use_regex}};
}

TrainerPipeline trainer_pipeline(const BpeTrainOptions& o) {
  TrainerPipeline p;
  if (o.style == BpeStyle::SentencePiece) {
    p.normalizer = {
        {"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\u2581"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
    p.pre_tokenizer = nullptr;
    // Training only: words start at "▁" so merges never span a word boundary (as SentencePiece).
    p.training_pre_tokenizer = {{"type", "Split"},
                                {"pattern", {{"String", "\u2581"}}},
                                {"behavior", "MergedWithNext"},
                                {"invert", false}};
    p.decoder = {{"type", "Sequence"},
                 {"decoders",
                  {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                   {{"type", "ByteFallback"}},
                   {{"type", "Fuse"}},
                   {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
    return p;  // post_processor is filled in once the <s> id is known
  }
  p.normalizer = nullptr;
  std::string main_regex = o.preset == SplitPreset::Llama3     ? kLlama3Regex
                           : o.preset == SplitPreset::DeepSeek ? kDeepSeekRegex
                                                               : kQwen2Regex;
  if (!o.split_regex.empty()) main_regex = o.split_regex;
  if (o.preset == SplitPreset::Gpt2 && o.split_regex.empty()) {
    p.pre_tokenizer = byte_level(true);
  } else if (o.preset == SplitPreset::DeepSeek) {
    p.pre_tokenizer = {{"type", "Sequence"},
                       {"pretokenizers",
                        {{{"type", "Digits"}, {"individual_digits", true}},
                         split(kDeepSeekCjkRegex),
                         split(main_regex),
                         byte_level(false)}}};
  } else {
    p.pre_tokenizer = {{"type", "Sequence"},
                       {"pretokenizers", {split(main_regex), byte_level(false)}}};
  }
  p.training_pre_tokenizer = p.pre_tokenizer;
  p.post_processor = byte_level(false);
  p.post_processor["trim_offsets"] = false;
  p.decoder = byte_level(false);
  return p;
}

}  // namespace sy
