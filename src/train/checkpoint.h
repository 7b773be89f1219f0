// Training checkpoints: a Hugging Face-style model directory that inference (and
// train::load_params) can open as is, plus what a resumed run needs.
//   config.json            the caller's text
//   tokenizer.json         the caller's text (omitted when empty)
//   model.safetensors      every Param by name (buffers included), F32 or BF16
//   optimizer.safetensors  AdamW moments "<name>.exp_avg" / "<name>.exp_avg_sq" (F32), its step
//   trainer_state.json     the caller's JSON object plus "optimizer_step"; written last
// Saving replaces the directory as a whole: everything goes to "<dir>.tmp-<pid>" and is fsync'd,
// then <dir> is renamed to "<dir>.old-<pid>", the temp dir to <dir>, and the old one removed. A
// crash at any point leaves a complete checkpoint: <dir>, or "<dir>.old-<pid>", which the next
// save or load renames back (recover_checkpoint_dir) while removing temp dirs of dead processes.
// Independent of how the model is built: only names, shapes and float32 values are involved.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "train/adamw.h"
#include "train/params.h"
#include "util/dtype.h"

namespace sy::train {

struct CheckpointContents {
  std::string config_json;     // written verbatim; must be a JSON object
  std::string tokenizer_json;  // written verbatim when not empty; must then be JSON
  nlohmann::json trainer_state = nlohmann::json::object();  // step, seed, data position, losses...
  DType weights_dtype = DType::F32;  // F32 or BF16 (values rounded to nearest even)
};

// Writes the checkpoint at `dir` (created, or replaced when it is a checkpoint already). sy::Error
// when an input is invalid, the parent directory is missing, `dir` exists but is not a training
// checkpoint (no trainer_state.json: never clobber a model directory), or a write fails; the
// previous checkpoint then stays in place.
void save_checkpoint(const std::string& dir, const ParamSet& params, const AdamW& optimizer,
                     const CheckpointContents& contents);

// Resumes from `dir`: sets every Param's value (the checkpoint must hold exactly the ParamSet's
// names with its shapes; sy::Error names the first mismatch), replaces the optimizer's state, and
// returns trainer_state.json (with "optimizer_step"). On error nothing is modified.
nlohmann::json load_checkpoint(const std::string& dir, ParamSet& params, AdamW& optimizer);

// Repairs what an interrupted save left beside `dir`: "<dir>.tmp-<pid>" of dead processes (or of
// this one) are removed; "<dir>.old-<pid>" is renamed back to <dir> if <dir> is missing, else
// removed. Called by save_checkpoint and load_checkpoint.
void recover_checkpoint_dir(const std::string& dir);

}  // namespace sy::train
