#include "synth/tiny_tokenizer.h"

#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace sy::synth {
namespace {

// A small multilingual text so merges cover common English pieces while other scripts,
// digits and emoji still exercise byte-level / byte-fallback paths.
constexpr const char* kCorpus =
    R"(In the beginning the engine had no experts, and the tokens waited.
Then the router looked at every token and chose the experts it liked best, two of eight.
The busiest expert set the pace, and the others waited for it: that is the straggler effect.
A mixture of experts keeps many parameters but touches few of them for each token.
The capacity factor bounds how many tokens one expert may take; the rest are dropped or rerouted.
When the experts live on different machines, tokens travel to them and back again.
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on and on.
Numbers: 0 1 2 3 4 5 6 7 8 9, 10, 42, 256, 1024, 3.14159, 2026-11-24, 12:30.
Code: for (int i = 0; i < n; ++i) { sum += x[i] * w[i]; } return sum;
def route(scores, k): return sorted(range(len(scores)), key=lambda e: -scores[e])[:k]
Français : le modèle choisit deux experts pour chaque jeton. Où est la bibliothèque ?
Deutsch: Die Experten arbeiten parallel, aber der langsamste bestimmt das Tempo.
Español: la mezcla de expertos reparte el trabajo entre muchos especialistas.
Русский: смесь экспертов выбирает двух экспертов для каждого токена.
日本語：専門家の混合は、各トークンに二人の専門家を選びます。
中文：混合专家模型为每个词元选择两个专家。
العربية: يختار الموجه خبيرين لكل رمز.
Emoji: 🚂 🚃 🚃 🚃 switchyard 👩‍💻 ✨ and a tab	between words.
)";

}  // namespace

TinyTokenizer make_tiny_tokenizer(const std::string& style, int64_t vocab_size) {
  BpeTrainOptions options;
  TinyTokenizer out;
  if (style == "byte_level") {
    options.style = BpeStyle::ByteLevel;
    options.special_tokens = {"<|endoftext|>"};
    if (vocab_size < 257 + 1)
      fail(
          "a byte-level tokenizer needs a vocabulary of at least 258 tokens (got --vocab {}); "
          "use --tokenizer none for smaller models",
          vocab_size);
  } else if (style == "sentencepiece") {
    options.style = BpeStyle::SentencePiece;
    if (vocab_size < 3 + 256 + 1)
      fail(
          "a SentencePiece-style tokenizer needs at least 260 tokens (got --vocab {}); "
          "use --tokenizer none for smaller models",
          vocab_size);
  } else {
    fail("unknown tokenizer style '{}' (expected byte_level, sentencepiece or none)", style);
  }
  options.vocab_size = vocab_size;
  options.min_frequency = 2;
  out.json = train_bpe_tokenizer_json(kCorpus, options);
  const Tokenizer tok = Tokenizer::from_json_string(out.json, "generated tokenizer.json");
  if (style == "byte_level") {
    out.eos_id = *tok.token_to_id("<|endoftext|>");
  } else {
    out.bos_id = *tok.token_to_id("<s>");
    out.eos_id = *tok.token_to_id("</s>");
  }
  out.vocab_size = tok.vocab_size();
  return out;
}

}  // namespace sy::synth
