#include "moe/precision_policy.h"

#include <fmt/format.h>

#include <numeric>

#include "ops/gemm_w8a8.h"
#include "util/error.h"
#include "util/parse.h"

namespace sy::moe {

std::string PrecisionPolicy::describe() const {
  switch (mode) {
    case PrecisionMode::kStored:
      return "bf16 (the stored precision)";
    case PrecisionMode::kLowAll:
      return fmt::format("low-all ({} on every rank)", low_format_name(format));
    case PrecisionMode::kReaLB:
      return fmt::format(
          "realb ({} on a rank when the step has >= {} tokens, its rows are >= {:.2f}x the mean"
          "{})",
          low_format_name(format), batch_threshold, hot_factor,
          fmt::format(" and, with modality tags, >= {:.2f} of them tagged", modality_threshold));
  }
  return "";
}

PrecisionMode parse_precision_mode(const std::string& name) {
  if (name == "bf16") return PrecisionMode::kStored;
  if (name == "low-all") return PrecisionMode::kLowAll;
  if (name == "realb") return PrecisionMode::kReaLB;
  fail("--precision-policy {}: choose bf16 (the stored precision), low-all or realb", name);
}

LowFormat parse_low_format(const std::string& name) {
  if (name == "int8") return LowFormat::kInt8;
  if (name == "q4") return LowFormat::kQ4;
  if (name == "nvfp4") return LowFormat::kNvfp4;
  fail("--low-precision {}: choose int8 (W8A8), q4 (Q4_0 blocks, W4A8) or nvfp4 (emulated W4A4)",
       name);
}

const char* low_format_name(LowFormat f) {
  switch (f) {
    case LowFormat::kInt8:
      return "int8 W8A8";
    case LowFormat::kQ4:
      return "Q4_0 W4A8";
    case LowFormat::kNvfp4:
      return "NVFP4 W4A4 (emulated in float32)";
  }
  return "";
}

std::string low_format_unavailable(LowFormat f) {
  if (f == LowFormat::kInt8 && !ops::detail::w8a8_fast())
    return "int8 W8A8 needs AVX-512 VNNI, which this CPU lacks (or SY_INT8_DOT=0 turned it off); "
           "q4 runs on every CPU (AVX-512 VNNI or float kernels)";
  return "";
}

bool ModalityRule::tagged(int32_t id) const {
  for (const auto& [lo, hi] : id_ranges)
    if (id >= lo && id <= hi) return true;
  return false;
}

ModalityRule parse_modality_rule(const std::string& text) {
  ModalityRule rule;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = std::min(text.find(',', at), text.size());
    const std::string part = text.substr(at, comma - at);
    const size_t dash = part.find('-');
    auto id = [&](const std::string& s) {
      const int64_t v = parse_int(s, "--modality-ids (ranges like 100-199,300-310)");
      if (v < 0 || v > INT32_MAX) fail("--modality-ids: {} is not a token id", v);
      return int32_t(v);
    };
    const int32_t lo = id(part.substr(0, dash));
    const int32_t hi = dash == std::string::npos ? lo : id(part.substr(dash + 1));
    if (hi < lo) fail("--modality-ids: range '{}' ends before it starts", part);
    rule.id_ranges.emplace_back(lo, hi);
    at = comma + 1;
  }
  return rule;
}

DeviceLoads device_loads(const Placement& placement, const std::vector<int64_t>& expert_rows,
                         const std::vector<int64_t>& expert_tagged, int64_t global_tokens) {
  DeviceLoads d;
  const int devices = placement.empty() ? 1 : placement.num_devices();
  d.rows.assign(size_t(devices), 0);
  if (!expert_tagged.empty()) d.tagged.assign(size_t(devices), 0);
  for (size_t e = 0; e < expert_rows.size(); ++e) {
    const size_t dev = placement.empty() ? 0 : size_t(placement.device_of(int(e)));
    d.rows[dev] += expert_rows[e];
    if (!expert_tagged.empty()) d.tagged[dev] += expert_tagged[e];
  }
  d.global_tokens = global_tokens;
  return d;
}

const char* precision_why_name(PrecisionWhy why) {
  switch (why) {
    case PrecisionWhy::kPolicy:
      return "policy";
    case PrecisionWhy::kSmallStep:
      return "step below the token threshold";
    case PrecisionWhy::kNotHot:
      return "not a hot rank";
    case PrecisionWhy::kUntagged:
      return "hot, tagged share below M_d";
    case PrecisionWhy::kHot:
      return "hot rank";
    case PrecisionWhy::kCount:
      break;
  }
  return "";
}

const char* precision_why_short(PrecisionWhy why) {
  static const char* const kNames[] = {"policy", "small-step", "not-hot", "text-dom", "hot", ""};
  return kNames[int(why)];
}

PrecisionChoice choose_precision(const PrecisionPolicy& p, const DeviceLoads& loads, int device) {
  using W = PrecisionWhy;
  switch (p.mode) {
    case PrecisionMode::kStored:
      return {false, W::kPolicy, "policy bf16"};
    case PrecisionMode::kLowAll:
      return {true, W::kPolicy, "policy low-all"};
    case PrecisionMode::kReaLB:
      break;
  }
  const int64_t mine = loads.rows[size_t(device)];
  const double mean = double(std::accumulate(loads.rows.begin(), loads.rows.end(), int64_t(0))) /
                      double(std::max<size_t>(1, loads.rows.size()));
  const double ratio = mean > 0 ? double(mine) / mean : 0.0;
  if (loads.global_tokens < p.batch_threshold)
    return {
        false, W::kSmallStep,
        fmt::format("{} < {} tokens (memory-bound step)", loads.global_tokens, p.batch_threshold)};
  if (mine == 0 || ratio < p.hot_factor)
    return {false, W::kNotHot, fmt::format("load {:.2f}x mean < {:.2f}", ratio, p.hot_factor)};
  std::string why = fmt::format("hot: load {:.2f}x mean >= {:.2f}; {} >= {} tokens", ratio,
                                p.hot_factor, loads.global_tokens, p.batch_threshold);
  if (!loads.tagged.empty()) {
    const double share = double(loads.tagged[size_t(device)]) / double(mine);
    if (share < p.modality_threshold)
      return {false, W::kUntagged,
              fmt::format("hot ({:.2f}x mean) but tagged share {:.2f} < M_d {:.2f}", ratio, share,
                          p.modality_threshold)};
    why += fmt::format("; tagged {:.2f} >= {:.2f}", share, p.modality_threshold);
  }
  return {true, W::kHot, why};
}

}  // namespace sy::moe
