// Building blocks for tools that rewrite a checkpoint's tensors into a new model folder
// (expert partition and merge): the output's tensor list, dtype-aware element scaling, and an
// all-or-nothing writer.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "util/dtype.h"

namespace sy::model {

// The tensors of the new checkpoint: unchanged ones point into the source's mapping, new ones
// into `owned`.
struct RewrittenTensors {
  std::vector<io::TensorToWrite> tensors;
  std::deque<std::vector<uint8_t>> owned;

  void keep(const io::TensorInfo& t);
  // A new tensor with `like`'s dtype; returns its (zeroed) bytes to fill.
  uint8_t* add(const std::string& name, const io::TensorInfo& like, std::vector<int64_t> shape,
               size_t nbytes);
};

// The tensor `name` of `store`, checked to have `shape` and a dtype Switchyard computes with.
const io::TensorInfo& tensor_with_shape(const io::TensorStore& store, const std::string& name,
                                        std::vector<int64_t> shape);

// dst = src * scale for one element in `dtype` (a plain copy when scale is 1).
void scale_element(DType dtype, const uint8_t* src, uint8_t* dst, float scale);

// Writes config.json, model.safetensors (`tensors`), `extra` files (name, bytes) and the other
// files of `source_dir` (tokenizer, generation config; not its weights; with `model_files_only`
// not a training checkpoint's state either) into a temporary folder beside `out_dir`, then
// renames it: a failure never leaves a half-written model.
void write_rewritten_model(const std::string& source_dir, const std::string& out_dir,
                           const nlohmann::json& config, const RewrittenTensors& tensors,
                           const std::vector<std::pair<std::string, std::string>>& extra = {},
                           bool model_files_only = false);

// A model folder (a training checkpoint included: sharded weights and optimizer state) as a
// plain Hugging Face one: config.json, one model.safetensors with the weights, tokenizer.json
// and the other files a model folder holds (not trainer_state.json). Returns the tensor count.
int64_t export_model(const std::string& model_dir, const std::string& out_dir);

}  // namespace sy::model
