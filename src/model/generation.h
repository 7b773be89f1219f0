// Decoding several sequences at once: one forward call per step serves every sequence (each
// with its own KV cache and length). Optionally speculative (SpecMoEOff, papers.md section 5):
// a small draft model proposes k tokens per sequence, the target checks the k + 1 positions
// of every sequence in one forward call, and both caches roll back past the first rejected
// token, so each expert weight the target reads serves b (k + 1) tokens instead of b.
//
// Greedy speculation emits exactly the tokens plain greedy decoding would; with sampling, the
// standard rejection rule (accept a draft token d with probability min(1, p(d) / q(d)), else
// draw from max(0, p - q) renormalised) keeps the output distribution the target's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/draft_length.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/sampler.h"

namespace sy::model {

struct GenerationConfig {
  int max_tokens = 64;      // per sequence
  bool stop_at_eos = true;  // an end-of-sequence token ends a sequence (and is not emitted)
  SamplerConfig sampler;    // temperature 0: greedy; sequence i samples with seed + i
  int draft_len = 0;        // k: tokens the draft proposes per step (0: no speculation;
                            // -1: chosen every step by model/draft_length.h's cost model)
  int max_draft_len = 8;    // the largest k the cost model considers
};

struct GenerationStats {
  int64_t sequences = 0, prompt_tokens = 0, generated = 0;
  int64_t target_calls = 0;  // decode forward calls of the target (the prefill not counted)
  int64_t draft_calls = 0;
  int64_t proposed = 0, accepted = 0;                // draft tokens offered / accepted
  double prefill_s = 0, decode_s = 0, draft_s = 0;   // draft_s is part of decode_s
  int64_t speculative_steps = 0, draft_len_sum = 0;  // steps with a draft; mean k = sum / steps
  double cost_model_error = -1;  // --draft-len auto: mean |predicted - measured| step time
};

// The target's forward pass. The caller may make it collective (expert parallelism: ranks
// without sequences join every call).
using ForwardFn =
    std::function<void(std::span<const SequenceChunk> chunks, LogitsFor which, float* logits)>;
// Each token as it is accepted: (sequence index, token id).
using TokenFn = std::function<void(size_t sequence, int32_t token)>;

class Generator {
 public:
  // draft: the draft model (run here, all experts local), or null for plain decoding. Its
  // vocabulary must be the target's (sy::Error otherwise).
  Generator(const ModelConfig& target, ForwardFn target_forward, const GenerationConfig& config,
            const Model* draft = nullptr);

  // sy::Error for an empty prompt or one that, with max_tokens (and a verification chunk),
  // does not fit the model's context. run() checks too; call it before printing anything.
  void check(const std::vector<std::vector<int32_t>>& prompts) const;
  // Generated ids per prompt (prompts must be non-empty).
  std::vector<std::vector<int32_t>> run(const std::vector<std::vector<int32_t>>& prompts,
                                        const TokenFn& on_token = {});
  const GenerationStats& stats() const { return stats_; }
  // The target's offloaded-expert cache, whose reads the cost model of --draft-len auto counts.
  void set_expert_cache(const moe::ExpertCache* cache) { cache_ = cache; }

 private:
  struct Sequence;
  void plain_step(std::vector<Sequence>& seqs);
  void speculative_step(std::vector<Sequence>& seqs);
  bool emit(Sequence& s, size_t index, int32_t token);

  const ModelConfig& target_;
  ForwardFn forward_;
  GenerationConfig config_;
  const Model* draft_;
  TokenFn on_token_;
  GenerationStats stats_;
  Workspace draft_ws_;
  std::vector<float> logits_, draft_logits_;
  const moe::ExpertCache* cache_ = nullptr;
  std::unique_ptr<DraftLengthModel> draft_length_;
};

}  // namespace sy::model
