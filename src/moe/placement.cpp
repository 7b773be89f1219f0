#include "moe/placement.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "util/error.h"

namespace sy::moe {

Placement Placement::contiguous(int num_experts, int num_devices) {
  if (num_devices < 1) fail("--devices must be at least 1 (got {})", num_devices);
  if (num_devices > num_experts)
    fail(
        "{} devices cannot share {} experts: every device needs at least one expert "
        "(use at most {} devices)",
        num_devices, num_experts, num_experts);
  std::vector<int32_t> device_of(static_cast<size_t>(num_experts));
  const int base = num_experts / num_devices, extra = num_experts % num_devices;
  int e = 0;
  for (int d = 0; d < num_devices; ++d)
    for (int i = 0; i < base + (d < extra ? 1 : 0); ++i) device_of[size_t(e++)] = d;
  return from_map(std::move(device_of), num_devices);
}

Placement Placement::from_map(std::vector<int32_t> device_of_expert, int num_devices) {
  if (num_devices < 1) fail("a placement needs at least one device");
  Placement p;
  p.num_devices_ = num_devices;
  p.experts_of_.assign(size_t(num_devices), {});
  for (size_t e = 0; e < device_of_expert.size(); ++e) {
    const int d = device_of_expert[e];
    if (d < 0 || d >= num_devices)
      fail("placement puts expert {} on device {}, outside 0..{}", e, d, num_devices - 1);
    p.experts_of_[size_t(d)].push_back(int32_t(e));
  }
  for (int d = 0; d < num_devices; ++d)
    if (p.experts_of_[size_t(d)].empty()) fail("placement leaves device {} without experts", d);
  p.device_of_ = std::move(device_of_expert);
  return p;
}

Placement Placement::from_file(const std::string& path, int num_experts) {
  std::ifstream in(path);
  if (!in) fail("cannot read placement file '{}'", path);
  std::vector<int32_t> device_of(size_t(num_experts), -1);
  std::string line;
  int line_no = 0, device = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string field;
    bool any = false;
    while (fields >> field) {
      size_t used = 0;
      long e = -1;
      try {
        e = std::stol(field, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != field.size())
        fail(
            "{}:{}: '{}' is not an expert id (one line per device, expert ids separated by "
            "spaces)",
            path, line_no, field);
      if (e < 0 || e >= num_experts)
        fail("{}:{}: expert {} is out of range: the model has {} experts (0..{})", path, line_no, e,
             num_experts, num_experts - 1);
      if (device_of[size_t(e)] >= 0)
        fail("{}:{}: expert {} is already placed on device {}", path, line_no, e,
             device_of[size_t(e)]);
      device_of[size_t(e)] = device;
      any = true;
    }
    if (any) ++device;
  }
  if (device == 0) fail("placement file '{}' lists no devices", path);
  for (int e = 0; e < num_experts; ++e)
    if (device_of[size_t(e)] < 0) fail("placement file '{}' does not place expert {}", path, e);
  return from_map(std::move(device_of), device);
}

std::string Placement::describe() const {
  if (empty()) return "1 device (all experts)";
  std::string s = fmt::format("{} devices:", num_devices_);
  for (int d = 0; d < num_devices_; ++d) {
    const auto& ex = experts_of_[size_t(d)];
    bool contiguous = true;
    for (size_t i = 1; i < ex.size(); ++i) contiguous &= ex[i] == ex[i - 1] + 1;
    s += fmt::format(" d{}", d);
    if (contiguous && ex.size() > 1)
      s += fmt::format(" e{}-e{}", ex.front(), ex.back());
    else
      for (int32_t e : ex) s += fmt::format(" e{}", e);
    if (d + 1 < num_devices_) s += ",";
  }
  return s;
}

}  // namespace sy::moe
