// Internal to the BPE trainer: the normalizer / pre-tokenizer / decoder JSON of each style.
#pragma once

#include <nlohmann/json.hpp>

#include "tokenizer/bpe_trainer.h"

namespace sy {

using ojson = nlohmann::ordered_json;  // keeps the key order HF writes

extern const char* kQwen2Regex;
extern const char* kLlama3Regex;
extern const char* kDeepSeekRegex;
extern const char* kDeepSeekCjkRegex;

struct TrainerPipeline {
  ojson normalizer, pre_tokenizer, training_pre_tokenizer, post_processor, decoder;
};

TrainerPipeline trainer_pipeline(const BpeTrainOptions& options);

}  // namespace sy
