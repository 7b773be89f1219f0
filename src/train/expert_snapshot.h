// Node-local memory snapshots of experts: the first level of MoC-System's two-level
// checkpointing. At each checkpoint a rank copies K_snapshot of its experts (weights and AdamW
// moments, float32) into node memory -- a tmpfs such as /dev/shm, which outlives the process, as
// the paper's CPU-memory agent does -- while only K_persist of them go to storage. A restarted
// rank whose node kept its snapshot restores those experts from it, fresher than storage; a
// rank whose node was lost finds nothing and falls back to storage.
//   <root>/switchyard-<hash of the run directory>/rank-<r>/<stem>.safetensors
// each holding one expert's tensors and "<name>.exp_avg" / ".exp_avg_sq", with the step in the
// metadata; written atomically, so a snapshot is whole or absent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/adamw.h"
#include "train/params.h"

namespace sy::train {

class ExpertSnapshot {
 public:
  ExpertSnapshot(const std::string& root, const std::string& run_dir, int rank);

  const std::string& dir() const { return dir_; }
  // Snapshots the tensors `names` (one expert) as `stem` at `step`.
  void write(const std::string& stem, const std::vector<std::string>& names, const ParamSet& params,
             const AdamW& optimizer, int64_t step) const;
  // The step of the snapshot `stem`, or -1 when there is none (or it does not parse).
  int64_t step_of(const std::string& stem) const;
  // Restores `names` and their moments from the snapshot `stem` (sy::Error on any mismatch,
  // before anything changes).
  void load(const std::string& stem, const std::vector<std::string>& names, ParamSet& params,
            AdamW& optimizer) const;
  void remove_all() const;  // node loss, or a run that finished

 private:
  std::string path(const std::string& stem) const;
  std::string dir_;
};

}  // namespace sy::train
