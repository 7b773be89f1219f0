// Decoders (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence)
// and post-processors (TemplateProcessing, ByteLevel, Sequence), following HF's Rust crate.
#include "tokenizer/components.h"
#include "tokenizer/utf8.h"

namespace sy {
namespace {

// Maps each token's characters back to bytes; a token with a character outside the
// byte alphabet (e.g. an added token containing a space) contributes its raw UTF-8.
class ByteLevelDecoder : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      std::string mapped;
      size_t pos = 0;
      bool ok = true;
      while (pos < token.size()) {
        const int b = utf8::char_to_byte(utf8::next(token, pos));
        if (b < 0) {
          ok = false;
          break;
        }
        mapped += static_cast<char>(b);
      }
      bytes += ok ? mapped : token;
    }
    return {utf8::lossy(bytes)};
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  std::string replacement;
  bool strip_first = true;  // prepend_scheme != never
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t pos = 0; pos < t.size();) {
        if (t.compare(pos, replacement.size(), replacement) == 0) {
          out += ' ';
          pos += replacement.size();
        } else {
          out += t[pos++];
        }
      }
      if (i == 0 && strip_first && !out.empty() && out[0] == ' ') out.erase(0, 1);
      tokens[i] = std::move(out);
    }
    return tokens;
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Regex p, std::string c) : pattern(std::move(p)), content(std::move(c)) {}
  Regex pattern;
  std::string content;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& t : tokens) t = pattern.replace_all(t, content);
    return tokens;
  }
};

// <0xXX> tokens become bytes; a run that is not valid UTF-8 becomes one U+FFFD per byte (as HF).
class ByteFallbackDecoder : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_len = 0;
    auto flush = [&] {
      if (run_len == 0) return;
      if (utf8::find_invalid(run) == std::string::npos) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run_len; ++i) out.push_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_len = 0;
    };
    for (std::string& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        byte = std::stoi(t.substr(3, 2), nullptr, 16);
      }
      if (byte >= 0) {
        run += static_cast<char>(byte);
        ++run_len;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

class FuseDecoder : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    return {all};
  }
};

// Removes up to `start` leading and `stop` trailing copies of `content` (one character).
class StripDecoder : public Decoder {
 public:
  std::string content;
  int64_t start = 0, stop = 0;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& t : tokens) {
      size_t begin = 0, end = t.size();
      for (int64_t i = 0;
           i < start && t.compare(begin, content.size(), content) == 0 && begin < end; ++i) {
        begin += content.size();
      }
      for (int64_t i = 0; i < stop && end >= begin + content.size() &&
                          t.compare(end - content.size(), content.size(), content) == 0;
           ++i) {
        end -= content.size();
      }
      t = t.substr(begin, end - begin);
    }
    return tokens;
  }
};

class BpeSuffixDecoder : public Decoder {
 public:
  std::string suffix;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string repl = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      const std::string& t = tokens[i];
      for (size_t pos = 0; pos < t.size();) {
        if (!suffix.empty() && t.compare(pos, suffix.size(), suffix) == 0) {
          out += repl;
          pos += suffix.size();
        } else {
          out += t[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
    return tokens;
  }
};

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> steps;
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& step : steps) tokens = step->decode_chain(std::move(tokens));
    return tokens;
  }
};

// Template for a single sequence: special token ids and the placeholder for sequence A.
class TemplateProcessor : public PostProcessor {
 public:
  std::vector<std::optional<std::vector<int32_t>>> items;  // nullopt = the sequence itself
  std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const override {
    std::vector<int32_t> out;
    for (const auto& item : items) {
      if (!item) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else if (add_special_tokens) {
        out.insert(out.end(), item->begin(), item->end());
      }
    }
    return out;
  }
};

class IdentityProcessor : public PostProcessor {
 public:
  std::vector<int32_t> process(std::vector<int32_t> ids, bool) const override { return ids; }
};

class SequenceProcessor : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> steps;
  std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const override {
    for (const auto& step : steps) ids = step->process(std::move(ids), add_special_tokens);
    return ids;
  }
};

}  // namespace

std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& path, const JsonCtx& ctx) {
  if (j.is_null()) return nullptr;
  const std::string type = ctx.type(j, path);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    const json& list = ctx.require(j, "decoders", path);
    if (!list.is_array()) ctx.error(fmt::format("'{}.decoders' must be an array", path));
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = parse_decoder(list[i], fmt::format("{}.decoders[{}]", path, i), ctx);
      if (step) seq->steps.push_back(std::move(step));
    }
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDecoder>();
    m->replacement = ctx.str(j, "replacement", path, "\u2581");
    if (m->replacement.empty())  // decoding would never advance
      ctx.error(fmt::format("'{}.replacement' must not be empty", path));
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      m->strip_first = ctx.str(j, "prepend_scheme", path) != "never";
    } else {
      m->strip_first = ctx.boolean(j, "add_prefix_space", path, true);
    }
    return m;
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(
        parse_pattern(ctx.require(j, "pattern", path), path + ".pattern", ctx),
        ctx.str(j, "content", path));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto s = std::make_unique<StripDecoder>();
    s->content = ctx.str(j, "content", path);
    if (s->content.empty()) ctx.error(fmt::format("'{}.content' must not be empty", path));
    s->start = ctx.integer(j, "start", path, 0);
    s->stop = ctx.integer(j, "stop", path, 0);
    return s;
  }
  if (type == "BPEDecoder") {
    auto b = std::make_unique<BpeSuffixDecoder>();
    b->suffix = ctx.str(j, "suffix", path, "</w>");
    return b;
  }
  ctx.error(fmt::format("unsupported decoder type '{}' at '{}'", type, path));
}

std::unique_ptr<PostProcessor> parse_post_processor(const json& j, const std::string& path,
                                                    const JsonCtx& ctx,
                                                    const TokenIdLookup& lookup) {
  if (j.is_null()) return nullptr;
  const std::string type = ctx.type(j, path);
  if (type == "ByteLevel") return std::make_unique<IdentityProcessor>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceProcessor>();
    const json& list = ctx.require(j, "processors", path);
    if (!list.is_array()) ctx.error(fmt::format("'{}.processors' must be an array", path));
    for (size_t i = 0; i < list.size(); ++i) {
      auto step =
          parse_post_processor(list[i], fmt::format("{}.processors[{}]", path, i), ctx, lookup);
      if (step) seq->steps.push_back(std::move(step));
    }
    return seq;
  }
  if (type == "TemplateProcessing") {
    auto t = std::make_unique<TemplateProcessor>();
    const json& single = ctx.require(j, "single", path);
    if (!single.is_array()) ctx.error(fmt::format("'{}.single' must be an array", path));
    const json* specials = j.contains("special_tokens") ? &j["special_tokens"] : nullptr;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string item_path = fmt::format("{}.single[{}]", path, i);
      const json& item = single[i];
      if (item.is_object() && item.contains("Sequence")) {
        const std::string seq_id = ctx.str(item["Sequence"], "id", item_path + ".Sequence");
        if (seq_id != "A")
          ctx.error(
              fmt::format("'{}' refers to sequence '{}' in a single template", item_path, seq_id));
        t->items.push_back(std::nullopt);
      } else if (item.is_object() && item.contains("SpecialToken")) {
        const std::string token = ctx.str(item["SpecialToken"], "id", item_path + ".SpecialToken");
        std::vector<int32_t> ids;
        if (specials && specials->is_object() && specials->contains(token)) {
          const json& entry = (*specials)[token];
          const json& id_list = ctx.require(entry, "ids", path + ".special_tokens." + token);
          if (!id_list.is_array())
            ctx.error(fmt::format("'{}.special_tokens.{}.ids' must be an array", path, token));
          for (const json& id : id_list) {
            if (!id.is_number_integer())
              ctx.error(fmt::format("'{}.special_tokens.{}.ids' must hold integers", path, token));
            ids.push_back(id.get<int32_t>());
          }
        } else if (auto id = lookup(token)) {
          ids.push_back(*id);
        } else {
          ctx.error(fmt::format("'{}' names special token '{}' that has no id", item_path, token));
        }
        t->items.push_back(std::move(ids));
      } else {
        ctx.error(fmt::format("'{}' must be a Sequence or SpecialToken item", item_path));
      }
    }
    return t;
  }
  ctx.error(fmt::format("unsupported post_processor type '{}' at '{}'", type, path));
}

}  // namespace sy
