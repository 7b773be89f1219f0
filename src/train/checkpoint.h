// Training checkpoints: a Hugging Face-style model directory (inference and train::load_params
// open it as is) that every rank of a run writes its own share of, and that a save may update
// only in part (partial experts checkpointing keeps other experts' older states).
//   config.json                     the caller's text
//   tokenizer.json                  the caller's text (omitted when empty)
//   w<save>-<stem>.safetensors      the weights of one shard group (F32 or BF16), e.g. one
//                                   expert of one layer, or one rank's share of the dense weights
//   m<save>-<stem>.safetensors      that group's AdamW moments "<name>.exp_avg" / ".exp_avg_sq"
//   model.safetensors.index.json    every weight -> the newest shard holding it (the HF index)
//   trainer_state.json              the manifest: the caller's JSON, "optimizer_step", and
//                                   "checkpoint": {format, save, files {name: {bytes, crc32}},
//                                   weights / moments {param: file}, saved_step {param: step}}
// A save is a two-phase commit: every rank writes and fsyncs its shards; rank 0 gathers their
// names, sizes and CRC-32s, writes the index and then the manifest (temp file, fsync, rename) and
// syncs the directory. The manifest's rename is the commit point: a crash before it leaves the
// previous manifest, whose shards are all still there, because only shards that the committed
// manifest does not name are ever removed, after the commit. A load checks every shard it reads
// against the manifest's size and checksum, so a corrupt or truncated shard is refused.
// Checkpoints of the earlier layout (model.safetensors + optimizer.safetensors) still load.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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

// Tensors saved together, into one weights file and one moments file; a later save replaces the
// group as a whole (so no shard ever holds a tensor that a newer shard also holds).
struct ShardGroup {
  std::string stem;                // [A-Za-z0-9_-], at most 48 characters, unique in a save
  std::vector<std::string> names;  // Param names
};

// The ranks taking part in a save (a world of one by default). gather: every rank's string at
// rank 0 (index = rank); broadcast: rank 0's string to all. Both collective.
struct SaveComm {
  int rank = 0, size = 1;
  std::function<std::vector<std::string>(const std::string&)> gather;
  std::function<void(std::string&)> broadcast;
};

struct SaveStats {
  int64_t weight_bytes = 0, moment_bytes = 0, files = 0;  // this rank's shards
  int64_t total_bytes = 0;                                // every rank's (rank 0 only)
  std::vector<int64_t> rank_bytes;                        // per rank (rank 0 only)
};

// Writes this rank's `groups` as a new save of the checkpoint at `dir` (created, or updated when
// it is a checkpoint already). Collective over `comm`: every rank calls it, rank 0 commits. After
// the commit every Param has a saved value (here or in an earlier save); otherwise, or when an
// input is invalid, `dir` exists but is not a training checkpoint (never clobber a model
// directory), or any rank's write fails, every rank gets sy::Error and the previous checkpoint
// stays as it was. Moments are saved for the group's trainable params (zeros before their first
// step).
SaveStats save_checkpoint(const std::string& dir, const ParamSet& params, const AdamW& optimizer,
                          const CheckpointContents& contents, const std::vector<ShardGroup>& groups,
                          const SaveComm& comm = {});
// One save in three steps, for callers that overlap the writing with training (MoC-Async):
//   CheckpointSave save(dir, contents, groups, params, comm);  // collective: checks, numbering
//   save.write(params, optimizer);  // this rank's shards; no communication, so it may run on a
//                                   // background thread while nothing updates the values
//   save.commit(params, optimizer_step);  // collective: rank 0 commits the manifest
// save_checkpoint above is these three in a row.
class CheckpointSave {
 public:
  CheckpointSave(const std::string& dir, CheckpointContents contents,
                 std::vector<ShardGroup> groups, const ParamSet& params, const SaveComm& comm);
  void write(const ParamSet& params, const AdamW& optimizer);
  SaveStats commit(const ParamSet& params, int64_t optimizer_step);

 private:
  std::string dir_arg_, dir_;
  CheckpointContents contents_;
  std::vector<ShardGroup> groups_;
  SaveComm comm_;
  int64_t save_ = 0;
  std::string error_;  // this rank's, reported at the commit
  nlohmann::json report_;
  SaveStats stats_;
};

// One process, every tensor in one group.
void save_checkpoint(const std::string& dir, const ParamSet& params, const AdamW& optimizer,
                     const CheckpointContents& contents);

// Resumes from `dir`: sets every Param's value from the newest shard holding it (the checkpoint
// must hold exactly the ParamSet's names with its shapes; sy::Error names the first mismatch),
// replaces the optimizer's state with the moments of the params trainable here, and returns
// trainer_state.json. Any rank count may load what any rank count saved. On error nothing is
// modified.
nlohmann::json load_checkpoint(const std::string& dir, ParamSet& params, AdamW& optimizer);

// Checks every shard the manifest of `dir` lists against its recorded size and CRC-32 (sy::Error
// naming the first that differs or is missing); a checkpoint of the earlier layout passes.
void verify_checkpoint(const std::string& dir);

// Repairs what an interrupted save of the earlier layout left beside `dir`: "<dir>.tmp-<pid>" of
// dead processes are removed; "<dir>.old-<pid>" is renamed back to <dir> if <dir> is missing,
// else removed. Called by save_checkpoint and load_checkpoint.
void recover_checkpoint_dir(const std::string& dir);

}  // namespace sy::train
