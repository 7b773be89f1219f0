// Target: tokenizer.json (model, normalizer, pre-tokenizer, post-processor, decoder, added
// tokens), then encode / decode / streaming decode of a fixed multilingual text.
#include "tokenizer/tokenizer.h"
#include "scratch.h"
#include "synth/tiny_tokenizer.h"
#include "target.h"
#include "util/error.h"

namespace sy::fuzz {

void run_one(std::string_view bytes) {
  const Tokenizer tok = Tokenizer::from_json_string(bytes, "fuzz input");
  static const std::string text =
      "Hello, world! 12345  tabs\tand\nnew lines; déjà vu, 日本語のテキスト, emoji 🙂, "
      "<s> </s> <|endoftext|> [INST] \u00a0\u2003 nbsp, \U0001f1fa\U0001f1f8 flags";
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, special);
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
    StreamDecoder stream(tok);
    for (int32_t id : ids) (void)stream.push(id);
    (void)stream.flush();
  }
  const int64_t v = tok.vocab_size();
  for (int64_t id : {int64_t(0), v / 2, v - 1, v, int64_t(-1)}) {
    try {  // ids outside the vocabulary are refused with a sy::Error
      (void)tok.id_to_token(int32_t(id));
      (void)tok.is_special(int32_t(id));
    } catch (const Error&) {
    }
  }
  (void)tok.token_to_id("Hello");
}

void write_seeds(const std::string& dir) {
  for (const char* style : {"byte_level", "sentencepiece"})
    for (int64_t vocab : {300, 1000})
      write_seed(dir, std::string(style) + "-" + std::to_string(vocab) + ".json",
                 synth::make_tiny_tokenizer(style, vocab).json);
}

}  // namespace sy::fuzz
