#include "moe/placement.h"

#include <fmt/format.h>

#include <algorithm>
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
  p.hosts_of_.resize(device_of_expert.size());
  for (size_t e = 0; e < device_of_expert.size(); ++e) p.hosts_of_[e] = {device_of_expert[e]};
  p.hosted_on_ = p.experts_of_;
  p.device_of_ = std::move(device_of_expert);
  return p;
}

void Placement::add_replica(int expert, int device) {
  if (expert < 0 || expert >= num_experts())
    fail("a replica of expert {}: the model has {} experts (0..{})", expert, num_experts(),
         num_experts() - 1);
  if (device < 0 || device >= num_devices_)
    fail("a replica of expert {} on device {}, outside 0..{}", expert, device, num_devices_ - 1);
  auto& hosts = hosts_of_[size_t(expert)];
  if (std::find(hosts.begin(), hosts.end(), device) != hosts.end())
    fail("device {} already holds expert {}{}", device, expert,
         device == device_of(expert) ? " (it owns it)" : " (a replica)");
  hosts.push_back(int32_t(device));
  auto& hosted = hosted_on_[size_t(device)];
  hosted.insert(std::upper_bound(hosted.begin(), hosted.end(), int32_t(expert)), int32_t(expert));
  ++replicas_;
}

int Placement::host_of_row(int expert, int source, int64_t row) const {
  const auto& hosts = hosts_of_[size_t(expert)];
  if (hosts.size() == 1) return hosts[0];
  for (int32_t h : hosts)
    if (h == source) return h;
  return hosts[size_t((row + source) % int64_t(hosts.size()))];
}

Placement Placement::from_file(const std::string& path, int num_experts) {
  std::ifstream in(path);
  if (!in) fail("cannot read placement file '{}'", path);
  std::vector<int32_t> device_of(size_t(num_experts), -1);
  std::vector<std::pair<int, int>> replicas;  // (expert, device), applied once all are placed
  std::vector<int> replica_lines;
  std::string line;
  int line_no = 0, device = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string field;
    bool any = false;
    while (fields >> field) {
      const bool replica = field.size() > 1 && field[0] == '+';
      if (replica) field.erase(0, 1);
      size_t used = 0;
      long e = -1;
      try {
        e = field[0] == '-' || field[0] == '+' ? -1 : std::stol(field, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != field.size())
        fail(
            "{}:{}: '{}{}' is not an expert id (one line per device, expert ids separated by "
            "spaces; '+e' for a replica of expert e)",
            path, line_no, replica ? "+" : "", field);
      if (e < 0 || e >= num_experts)
        fail("{}:{}: expert {} is out of range: the model has {} experts (0..{})", path, line_no, e,
             num_experts, num_experts - 1);
      if (replica) {
        replicas.emplace_back(int(e), device);
        replica_lines.push_back(line_no);
        any = true;
        continue;
      }
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
  Placement p = from_map(std::move(device_of), device);
  for (size_t i = 0; i < replicas.size(); ++i) {
    try {
      p.add_replica(replicas[i].first, replicas[i].second);
    } catch (const Error& err) {
      fail("{}:{}: {}", path, replica_lines[i], err.what());
    }
  }
  return p;
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
    for (int32_t e : hosted_on_[size_t(d)])
      if (device_of(e) != d) s += fmt::format(" +e{}", e);
    if (d + 1 < num_devices_) s += ",";
  }
  if (replicas_ > 0) s += fmt::format(" ({} replica{})", replicas_, replicas_ == 1 ? "" : "s");
  return s;
}

}  // namespace sy::moe
