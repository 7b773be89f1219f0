// ReaLB (papers.md section 7): under expert parallelism the ranks that host the step's hottest
// experts are the stragglers; instead of moving tokens or replicating experts, each such rank
// computes its experts of that layer in low precision for that step. The weights stay in their
// stored precision; the rank converts the experts it is about to run while its rows are still
// in flight (parallel/expert_parallel.h), so the decision and the conversion cost no step time
// when they fit inside the dispatch.
//
// This file is the decision: which devices (ranks) run low this layer and step, and why.
// Policies: `bf16` (never: the stored precision), `low-all` (every device, every step: the
// paper's "FP4-All"), `realb` (a device runs low when all three hold):
//   1. the step is compute-bound: the global token count is at least batch_threshold (2048);
//   2. the device is a hot rank: its rows (token-expert pairs it computes) are at least
//      hot_factor (1.15) times the mean over devices. The paper does not publish its rule; 1.15
//      switches a rank that would otherwise finish >= 15% after the average one, which is where
//      the saved compute shortens the step rather than only the rank's own idle time;
//   3. with modality tags, the share of tagged rows on the device is at least M_d (0.7): the
//      paper keeps text-dominated devices in full precision (accuracy). Without tags: no check.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "moe/placement.h"

namespace sy::moe {

enum class PrecisionMode { kStored, kLowAll, kReaLB };
// int8: W8A8 with per-row weight and per-token activation scales (ops/gemm_w8a8.h, AVX-512
// VNNI); q4: ggml's Q4_0 blocks, activations int8 (W4A8; ops/gemv_int8.h); nvfp4: the paper's
// own W4A4 format, emulated in float32 (util/nvfp4.h; accuracy only, no speed).
enum class LowFormat { kInt8, kQ4, kNvfp4 };

struct PrecisionPolicy {
  PrecisionMode mode = PrecisionMode::kStored;
  LowFormat format = LowFormat::kInt8;
  int64_t batch_threshold = 2048;
  double hot_factor = 1.15;
  double modality_threshold = 0.7;  // M_d
  bool requested = false;           // a policy was asked for (bf16 included): decide and report
  bool active() const { return mode != PrecisionMode::kStored; }
  // Choices are made and logged: any requested policy (bf16 too, as the baseline of a report).
  bool tracked() const { return requested || active(); }
  std::string describe() const;  // "realb (int8 W8A8; >= 2048 tokens, load >= 1.15x mean, ...)"
};

// "bf16" | "low-all" | "realb"; "int8" | "q4" | "nvfp4". sy::Error naming the choices.
PrecisionMode parse_precision_mode(const std::string& name);
LowFormat parse_low_format(const std::string& name);
const char* low_format_name(LowFormat f);  // "int8 W8A8" ...
// Why this CPU cannot run `f` at speed (empty when it can): int8 needs AVX-512 VNNI.
std::string low_format_unavailable(LowFormat f);

// Tokens whose ids fall in one of the ranges are tagged (a stand-in for an image's tokens in
// a multimodal model: there is none here). Empty: no tags.
struct ModalityRule {
  std::vector<std::pair<int32_t, int32_t>> id_ranges;  // inclusive
  bool active() const { return !id_ranges.empty(); }
  bool tagged(int32_t id) const;
};
// "100-199,512-1023" (single ids allowed: "7"). sy::Error on malformed or reversed ranges.
ModalityRule parse_modality_rule(const std::string& text);

// What the devices hold this layer and step.
struct DeviceLoads {
  std::vector<int64_t> rows;    // [D] token-expert pairs each device computes
  std::vector<int64_t> tagged;  // [D] of which tagged; empty: no tags
  int64_t global_tokens = 0;    // tokens of the step over all devices
};

// Why a device runs in the precision it does (reports count them).
enum class PrecisionWhy { kPolicy, kSmallStep, kNotHot, kUntagged, kHot, kCount };
const char* precision_why_name(PrecisionWhy why);   // "step below the token threshold", ...
const char* precision_why_short(PrecisionWhy why);  // "small-step", ... (table headers)

struct PrecisionChoice {
  bool low = false;
  PrecisionWhy why = PrecisionWhy::kPolicy;
  std::string reason;  // "hot: 1.42x mean >= 1.15; 4096 >= 2048 tokens; tagged 0.81 >= 0.70"
};

// The choice for `device` under `policy`.
PrecisionChoice choose_precision(const PrecisionPolicy& policy, const DeviceLoads& loads,
                                 int device);

// Per-device loads from per-expert rows (and tagged rows, or empty); an empty placement is
// one device.
DeviceLoads device_loads(const Placement& placement, const std::vector<int64_t>& expert_rows,
                         const std::vector<int64_t>& expert_tagged, int64_t global_tokens);

// One device's choice in one layer call and what it cost (the reports' rows).
struct PrecisionRecord {
  int layer = 0, device = 0;
  bool low = false;
  int64_t rows = 0;
  double load_ratio = 0;        // rows / mean rows over devices
  double convert_s = 0;         // converting its experts to the low format
  double convert_hidden_s = 0;  // of which while its rows were still in flight
  double expert_s = 0;          // its experts' compute (conversion excluded)
  PrecisionWhy why = PrecisionWhy::kPolicy;
  std::string reason;
};

}  // namespace sy::moe
