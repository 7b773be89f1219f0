// Placement: which device (expert-parallel rank) hosts each expert, and which device each
// token comes from. Capacity policies that look at devices (expanded drop, device-level
// capacity) read it; the MPI layer uses the same map to decide ownership.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::moe {

class Placement {
 public:
  Placement() = default;  // empty: one device holding every expert (see resolved())

  // Experts split into `num_devices` contiguous blocks; the first E % D devices hold one
  // extra expert. Error when num_devices < 1 or num_devices > num_experts.
  static Placement contiguous(int num_experts, int num_devices);

  // A text file, one line per device listing its expert ids ("0 1 2"); '#' starts a comment,
  // blank lines are ignored. "+e" on a device's line puts a replica of expert e there (the
  // EPLB-style baseline: the expert's rows are then shared by its hosts, see host_of_row).
  // Error (naming the file and line) when an expert is missing, listed twice, out of range,
  // replicated on its own device, or a device line is empty.
  static Placement from_file(const std::string& path, int num_experts);

  // The same validation on an explicit map expert -> device.
  static Placement from_map(std::vector<int32_t> device_of_expert, int num_devices);

  bool empty() const { return device_of_.empty(); }
  int num_devices() const { return num_devices_; }
  int num_experts() const { return int(device_of_.size()); }
  int device_of(int expert) const { return device_of_[size_t(expert)]; }
  // The experts a device owns (one owner per expert: what capacity policies and load reports
  // call the expert's device), without replicas.
  const std::vector<int32_t>& experts_on(int device) const { return experts_of_[size_t(device)]; }

  // Replicas (expert parallelism only): a device may also host copies of other devices' experts.
  // Adds a replica of `expert` on `device`; error when the device already hosts it.
  void add_replica(int expert, int device);
  bool replicated() const { return replicas_ > 0; }
  int num_replicas() const { return replicas_; }
  // The devices holding `expert`: its owner first, then its replicas in the order added.
  const std::vector<int32_t>& hosts_of(int expert) const { return hosts_of_[size_t(expert)]; }
  // The experts whose weights a device holds and runs: owned and replicated, ascending.
  const std::vector<int32_t>& hosted_on(int device) const { return hosted_on_[size_t(device)]; }
  // Which host runs the `row`-th row (0-based, in token order) that device `source` routes to
  // `expert`: the source itself when it hosts the expert (no traffic), else the hosts in turn
  // starting at one that depends on the source, so every host gets an equal share.
  int host_of_row(int expert, int source, int64_t row) const;

  // Tokens of one forward call are split into num_devices contiguous slices, as in
  // data-parallel attention where each rank owns its own sequences: [begin, end) of `device`.
  int64_t token_begin(int device, int64_t num_tokens) const {
    return num_tokens * device / num_devices_;
  }

  std::string describe() const;  // "4 devices: d0 e0-e1, d1 e2-e3, ..."

 private:
  int num_devices_ = 1;
  std::vector<int32_t> device_of_;                // [E]
  std::vector<std::vector<int32_t>> experts_of_;  // [D], ascending ids
  std::vector<std::vector<int32_t>> hosts_of_;    // [E]: owner, then replicas
  std::vector<std::vector<int32_t>> hosted_on_;   // [D], ascending ids, replicas included
  int replicas_ = 0;
};

}  // namespace sy::moe
