#include "model/generation.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "util/error.h"
#include "util/phase_times.h"

namespace sy::model {

namespace {
using Clock = std::chrono::steady_clock;
int32_t argmax(const float* x, int64_t n) {
  return int32_t(std::max_element(x, x + n) - x);
}
}  // namespace

// One sequence's state between steps. Invariant: the target's cache holds the prompt and every
// emitted token except `pending` (the newest, not yet fed); the draft's cache plus `backlog`
// hold the same.
struct Generator::Sequence {
  std::vector<int32_t> out;
  int32_t pending = -1;
  bool done = false;
  std::unique_ptr<KvCache> cache, draft_cache;
  std::vector<int32_t> backlog;
  Sampler sampler;
  std::vector<int32_t> proposal;               // this step's draft tokens
  std::vector<std::vector<float>> draft_dist;  // their draft distributions q (sampling only)
  std::vector<int32_t> chunk;                  // this step's tokens for a forward call

  explicit Sequence(const SamplerConfig& c) : sampler(c) {}
};

Generator::Generator(const ModelConfig& target, ForwardFn target_forward,
                     const GenerationConfig& config, const Model* draft)
    : target_(target), forward_(std::move(target_forward)), config_(config), draft_(draft) {
  if (config_.max_tokens < 0) fail("--max-tokens must be >= 0, got {}", config_.max_tokens);
  if (config_.draft_len < -1 || config_.draft_len > 64)
    fail("--draft-len must be in 1 .. 64 or auto, got {}", config_.draft_len);
  if (config_.max_draft_len < 1 || config_.max_draft_len > 64)
    fail("the largest draft length must be in 1 .. 64, got {}", config_.max_draft_len);
  if (draft_ && draft_->config().vocab_size != target_.vocab_size)
    fail(
        "the draft model's vocabulary has {} tokens but the target's has {}: a draft must share "
        "its target's tokenizer",
        draft_->config().vocab_size, target_.vocab_size);
  if (draft_ && config_.draft_len == 0) config_.draft_len = 4;
  if (!draft_) config_.draft_len = 0;
}

bool Generator::emit(Sequence& s, size_t index, int32_t token) {
  if (s.done) return false;
  const auto& eos = target_.eos_token_ids;
  if (config_.stop_at_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
    s.done = true;
    return false;
  }
  s.out.push_back(token);
  ++stats_.generated;
  if (on_token_) on_token_(index, token);
  if (int64_t(s.out.size()) >= config_.max_tokens) s.done = true;
  s.pending = token;
  return !s.done;
}

void Generator::check(const std::vector<std::vector<int32_t>>& prompts) const {
  const int k = config_.draft_len < 0 ? config_.max_draft_len : config_.draft_len;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) fail("prompt {} is empty", i + 1);
    const int64_t capacity = int64_t(prompts[i].size()) + config_.max_tokens + (k ? k + 1 : 0);
    if (capacity > target_.max_position_embeddings)
      fail(
          "prompt {} has {} tokens: with --max-tokens {}{} that exceeds the model's context of "
          "{} positions (max_position_embeddings): lower --max-tokens",
          i + 1, prompts[i].size(), config_.max_tokens,
          k ? fmt::format(" and --draft-len {}", k) : "", target_.max_position_embeddings);
  }
}

std::vector<std::vector<int32_t>> Generator::run(const std::vector<std::vector<int32_t>>& prompts,
                                                 const TokenFn& on_token) {
  check(prompts);
  on_token_ = on_token;
  stats_ = GenerationStats{};
  const int64_t V = target_.vocab_size;
  const int k = config_.draft_len < 0 ? config_.max_draft_len : config_.draft_len;
  if (config_.draft_len < 0) {
    int64_t pairs = 0;
    if (cache_)
      for (int64_t l = 0; l < target_.num_layers; ++l)
        pairs += target_.layer_is_moe[size_t(l)] ? target_.router.num_experts : 0;
    draft_length_ = std::make_unique<DraftLengthModel>(config_.max_draft_len, pairs);
  }
  std::vector<Sequence> seqs;
  seqs.reserve(prompts.size());
  std::vector<SequenceChunk> chunks, draft_chunks;
  for (size_t i = 0; i < prompts.size(); ++i) {
    SamplerConfig sc = config_.sampler;
    sc.seed += i;
    Sequence& s = seqs.emplace_back(sc);
    // Room for a verification chunk past the last token.
    const int64_t capacity = int64_t(prompts[i].size()) + config_.max_tokens + (k ? k + 1 : 0);
    s.cache = std::make_unique<KvCache>(target_, capacity);
    chunks.push_back({s.cache.get(), prompts[i]});
    if (draft_) {
      s.draft_cache = std::make_unique<KvCache>(draft_->config(), capacity);
      draft_chunks.push_back({s.draft_cache.get(), prompts[i]});
    }
    stats_.prompt_tokens += int64_t(prompts[i].size());
  }
  stats_.sequences = int64_t(seqs.size());

  const auto t0 = Clock::now();
  logits_.resize(size_t(int64_t(seqs.size()) * V));
  forward_(chunks, LogitsFor::kLastToken, logits_.data());
  if (draft_) {
    draft_logits_.resize(logits_.size());
    draft_->forward(draft_chunks, LogitsFor::kLastToken, draft_logits_.data(), draft_ws_);
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (config_.max_tokens == 0) {
      seqs[i].done = true;
      continue;
    }
    emit(seqs[i], i, seqs[i].sampler.sample(logits_.data() + int64_t(i) * V, V));
  }
  stats_.prefill_s = seconds_since(t0);

  const auto t1 = Clock::now();
  while (std::any_of(seqs.begin(), seqs.end(), [](const Sequence& s) { return !s.done; })) {
    if (k != 0)
      speculative_step(seqs);
    else
      plain_step(seqs);
  }
  stats_.decode_s = seconds_since(t1);
  if (draft_length_ && draft_length_->predicted_steps() > 0)
    stats_.cost_model_error = draft_length_->mean_abs_error();

  std::vector<std::vector<int32_t>> out;
  for (Sequence& s : seqs) out.push_back(std::move(s.out));
  return out;
}

void Generator::plain_step(std::vector<Sequence>& seqs) {
  const int64_t V = target_.vocab_size;
  std::vector<SequenceChunk> chunks;
  std::vector<size_t> active;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i].done) continue;
    chunks.push_back({seqs[i].cache.get(), {&seqs[i].pending, 1}});
    active.push_back(i);
  }
  logits_.resize(size_t(int64_t(active.size()) * V));
  const int64_t requests_before = cache_ ? cache_->stats().requests : 0;
  const auto t0 = Clock::now();
  forward_(chunks, LogitsFor::kLastToken, logits_.data());
  const double seconds = seconds_since(t0);
  ++stats_.target_calls;
  for (size_t a = 0; a < active.size(); ++a) {
    Sequence& s = seqs[active[a]];
    // With a draft (auto k chose 0 this step), the token the target took is one the draft
    // has yet to see.
    if (draft_) s.backlog.push_back(s.pending);
    emit(s, active[a], s.sampler.sample(logits_.data() + int64_t(a) * V, V));
  }
  if (draft_length_)
    draft_length_->record(0, int64_t(active.size()), 0.0, seconds,
                          cache_ ? cache_->stats().requests - requests_before : 0, 0, 0);
}

void Generator::speculative_step(std::vector<Sequence>& seqs) {
  const int64_t V = target_.vocab_size;
  std::vector<size_t> active;
  for (size_t i = 0; i < seqs.size(); ++i)
    if (!seqs[i].done) active.push_back(i);
  const int64_t B = int64_t(active.size());
  const int k = draft_length_ ? draft_length_->choose(B) : config_.draft_len;
  ++stats_.speculative_steps;
  stats_.draft_len_sum += k;
  if (k == 0) {  // the cost model expects a plain step to pay more
    plain_step(seqs);
    return;
  }

  // 1. The draft proposes k tokens per sequence, one forward call per token for all of them.
  const auto t_draft = Clock::now();
  std::vector<SequenceChunk> chunks(static_cast<size_t>(B));
  draft_logits_.resize(size_t(B * V));
  for (size_t a = 0; a < active.size(); ++a) {
    Sequence& s = seqs[active[a]];
    s.proposal.clear();
    s.draft_dist.resize(s.sampler.greedy() ? 0 : size_t(k));
  }
  for (int j = 0; j < k; ++j) {
    for (size_t a = 0; a < active.size(); ++a) {
      Sequence& s = seqs[active[a]];
      if (j == 0) {
        s.chunk = s.backlog;
        s.chunk.push_back(s.pending);
        s.backlog.clear();
      } else {
        s.chunk.assign(1, s.proposal.back());
      }
      chunks[a] = {s.draft_cache.get(), s.chunk};
    }
    draft_->forward(chunks, LogitsFor::kLastToken, draft_logits_.data(), draft_ws_);
    ++stats_.draft_calls;
    for (size_t a = 0; a < active.size(); ++a) {
      Sequence& s = seqs[active[a]];
      const float* q = draft_logits_.data() + int64_t(a) * V;
      if (s.sampler.greedy()) {
        s.proposal.push_back(argmax(q, V));
      } else {
        s.sampler.distribution(q, V, s.draft_dist[size_t(j)]);
        s.proposal.push_back(s.sampler.draw(s.draft_dist[size_t(j)], 1.0));
      }
    }
  }
  stats_.draft_s += seconds_since(t_draft);

  // 2. The target checks pending + the k proposals of every sequence in one forward call.
  std::vector<int64_t> cached(static_cast<size_t>(B));
  for (size_t a = 0; a < active.size(); ++a) {
    Sequence& s = seqs[active[a]];
    cached[a] = s.cache->size();
    s.chunk.assign(1, s.pending);
    s.chunk.insert(s.chunk.end(), s.proposal.begin(), s.proposal.end());
    chunks[a] = {s.cache.get(), s.chunk};
  }
  logits_.resize(size_t(B * (k + 1) * V));
  const int64_t requests_before = cache_ ? cache_->stats().requests : 0;
  const auto t_verify = Clock::now();
  forward_(chunks, LogitsFor::kAllTokens, logits_.data());
  const double verify_s = seconds_since(t_verify);
  const int64_t experts_run = cache_ ? cache_->stats().requests - requests_before : 0;
  ++stats_.target_calls;
  const double draft_s = std::chrono::duration<double>(t_verify - t_draft).count();
  int64_t step_accepted = 0, step_rejected = 0;

  // 3. Accept the longest agreeing prefix, then the target's own token; roll the caches back.
  std::vector<float> p, residual;
  for (size_t a = 0; a < active.size(); ++a) {
    const size_t index = active[a];
    Sequence& s = seqs[index];
    const float* rows = logits_.data() + int64_t(a) * (k + 1) * V;
    int accepted = 0;
    bool live = true;
    for (int j = 0; j < k && live; ++j) {
      const float* row = rows + int64_t(j) * V;
      const int32_t d = s.proposal[size_t(j)];
      int32_t take;
      if (s.sampler.greedy()) {
        take = argmax(row, V);
      } else {
        s.sampler.distribution(row, V, p);
        const std::vector<float>& q = s.draft_dist[size_t(j)];
        if (q[size_t(d)] > 0 && s.sampler.uniform() * q[size_t(d)] < p[size_t(d)]) {
          take = d;  // accepted with probability min(1, p(d) / q(d))
        } else {
          residual.resize(size_t(V));
          double total = 0;
          for (int64_t v = 0; v < V; ++v)
            total += residual[size_t(v)] = std::max(0.0f, p[size_t(v)] - q[size_t(v)]);
          take = total > 0 ? s.sampler.draw(residual, total) : s.sampler.draw(p, 1.0);
        }
      }
      if (take != d) {
        live = emit(s, index, take);  // the target's correction ends the step
        break;
      }
      ++accepted;
      live = emit(s, index, d);
      if (accepted == k && live)  // every proposal accepted: the target's next token is free
        emit(s, index, s.sampler.sample(rows + int64_t(k) * V, V));
    }
    stats_.proposed += k;
    stats_.accepted += accepted;
    step_accepted += accepted;
    step_rejected += accepted < k ? 1 : 0;
    if (s.done) continue;
    // The target cached pending + k proposals; keep pending + the accepted ones.
    s.cache->truncate(cached[a] + 1 + accepted);
    // The draft cached pending + the first k - 1 proposals.
    if (accepted < k)
      s.draft_cache->truncate(cached[a] + 1 + accepted);
    else
      s.backlog.assign(1, s.proposal.back());
  }
  if (draft_length_)
    draft_length_->record(k, B, draft_s, verify_s, experts_run, step_accepted, step_rejected);
}

}  // namespace sy::model
