// Tokenizer: parses tokenizer.json into the pipeline (tokenizer_impl.h) and runs
// encode / decode the way Hugging Face's tokenizers crate does; also StreamDecoder.
#include "tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"
#include "util/json_bounded.h"

namespace sy {

namespace {

void parse_added_tokens(const json& root, Tokenizer::Impl& impl, const JsonCtx& ctx) {
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return;
  if (!it->is_array()) ctx.error("'added_tokens' must be an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string path = fmt::format("added_tokens[{}]", i);
    if (!t.is_object()) ctx.error(fmt::format("'{}' must be an object", path));
    AddedToken tok;
    const int64_t id = ctx.integer(t, "id", path);
    if (id < 0 || id > INT32_MAX) ctx.error(fmt::format("'{}.id' = {} is out of range", path, id));
    tok.id = static_cast<int32_t>(id);
    tok.content = ctx.str(t, "content", path);
    if (tok.content.empty()) ctx.error(fmt::format("'{}.content' must not be empty", path));
    if (utf8::find_invalid(tok.content) != std::string::npos)
      ctx.error(fmt::format("'{}.content' is not valid UTF-8", path));
    tok.special = ctx.boolean(t, "special", path, false);
    tok.lstrip = ctx.boolean(t, "lstrip", path, false);
    tok.rstrip = ctx.boolean(t, "rstrip", path, false);
    tok.single_word = ctx.boolean(t, "single_word", path, false);
    tok.normalized = ctx.boolean(t, "normalized", path, !tok.special);
    impl.added_by_id[tok.id] = impl.added_tokens.size();
    impl.added_by_content.emplace(tok.content, tok.id);
    impl.added_tokens.push_back(tok);
  }
  for (const AddedToken& tok : impl.added_tokens) {
    if (tok.special || !tok.normalized || !impl.normalizer) {
      impl.raw_matcher.add(tok, tok.content);
    } else {
      impl.normalized_matcher.add(tok, impl.normalizer->normalize(tok.content));
    }
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("tokenizer.json: cannot open '{}'", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return from_json_string(buffer.str(), path);
}

Tokenizer Tokenizer::from_json_string(std::string_view text, const std::string& origin) {
  JsonCtx ctx{origin};
  const json root = parse_json_bounded(std::string(text), "tokenizer.json '" + origin + "'");
  if (!root.is_object()) ctx.error("the top level must be an object");
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  const json& model = ctx.require(root, "model", "<root>");
  if (!model.is_object()) ctx.error("'model' must be an object");
  const std::string model_type = model.contains("type") ? ctx.str(model, "type", "model") : "BPE";
  if (model_type != "BPE") ctx.error(fmt::format("unsupported model type '{}'", model_type));
  impl->model = BpeModel::from_json(model, "model", ctx);

  auto component = [&](const char* key) -> const json& {
    static const json null_json;
    auto it = root.find(key);
    return it == root.end() ? null_json : *it;
  };
  impl->normalizer = parse_normalizer(component("normalizer"), "normalizer", ctx);
  impl->pre_tokenizer = parse_pre_tokenizer(component("pre_tokenizer"), "pre_tokenizer", ctx);
  impl->decoder = parse_decoder(component("decoder"), "decoder", ctx);
  parse_added_tokens(root, *impl, ctx);
  Impl* raw = impl.get();
  impl->post_processor =
      parse_post_processor(component("post_processor"), "post_processor", ctx,
                           [raw](const std::string& token) -> std::optional<int32_t> {
                             auto it = raw->added_by_content.find(token);
                             if (it != raw->added_by_content.end()) return it->second;
                             return raw->model.token_to_id(token);
                           });
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::Impl::encode_ids(std::string_view text) const {
  std::vector<int32_t> ids;
  split_words(
      text, [&](int32_t id) { ids.push_back(id); },
      [&](const std::string& word) { model.tokenize(word, ids); });
  return ids;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const size_t bad = utf8::find_invalid(text);
  if (bad != std::string_view::npos)
    fail("tokenizer: input text is not valid UTF-8 (byte offset {})", bad);
  std::vector<int32_t> ids = impl_->encode_ids(text);
  if (impl_->post_processor)
    ids = impl_->post_processor->process(std::move(ids), add_special_tokens);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto it = impl_->added_by_id.find(id);
    if (it != impl_->added_by_id.end()) {
      const AddedToken& tok = impl_->added_tokens[it->second];
      if (!(skip_special_tokens && tok.special)) tokens.push_back(tok.content);
    } else if (const std::string* t = impl_->model.id_to_token(id)) {
      tokens.push_back(*t);
    }  // ids outside the vocabulary (padded embedding rows) decode to nothing, as in HF
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  std::string out;
  for (const std::string& piece : impl_->decoder->decode_chain(std::move(tokens))) out += piece;
  return out;
}

int64_t Tokenizer::vocab_size() const {
  int64_t max_id = impl_->model.max_id();
  for (const AddedToken& t : impl_->added_tokens) max_id = std::max<int64_t>(max_id, t.id);
  return max_id + 1;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model.token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added_tokens[it->second].content;
  if (const std::string* t = impl_->model.id_to_token(id)) return *t;
  fail("tokenizer: id {} is not in the vocabulary of {}", id, impl_->origin);
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added_tokens[it->second].special;
}

// HF's DecodeStream: decode a short window of ids, emit only what extends the previous
// window's text and does not end in U+FFFD (an incomplete UTF-8 sequence), then slide.
std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string text = tokenizer_.decode(ids_);
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  if (text.size() <= prefix_.size() || std::string_view(text).ends_with(kReplacement)) return "";
  std::string fresh = text.substr(prefix_.size());
  const size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_index_));
  prefix_ = tokenizer_.decode(ids_);
  prefix_index_ = new_prefix_index;
  return fresh;
}

std::string StreamDecoder::flush() {
  const std::string text = tokenizer_.decode(ids_);
  std::string rest = text.size() > prefix_.size() ? text.substr(prefix_.size()) : "";
  ids_.clear();
  prefix_.clear();
  prefix_index_ = 0;
  return rest;
}

}  // namespace sy
