#include "cli/common.h"

#include "model/family.h"

#include <fmt/core.h>

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/file_util.h"
#include "ops/threads.h"
#include "util/error.h"

namespace sy::cli {

const CLI::Validator kFiniteNumber(
    [](std::string& text) -> std::string {
      double v = 0;
      if (!CLI::detail::lexical_cast(text, v) || !std::isfinite(v))
        return "must be a finite number, got '" + text + "'";
      return "";
    },
    "FINITE");

void make_output_dir(const std::string& path, const std::string& flag) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_directory(path, ec))
    fail("{} {}: exists and is not a directory", flag, path);
  std::filesystem::create_directories(path, ec);
  if (ec) fail("{} {}: cannot create the directory: {}", flag, path, ec.message());
  if (::access(path.c_str(), W_OK) != 0)
    fail("{} {}: the directory is not writable: {}", flag, path, std::strerror(errno));
}

void add_model_options(CLI::App& cmd, ModelOptions& o) {
  cmd.add_option("-m,--model", o.model_dir,
                 "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)")
      ->required();
  cmd.add_option("-t,--threads", o.threads, "Threads (0 = all cores)")->capture_default_str();
  const char* group = "Expert offloading (a model larger than memory)";
  cmd.add_option("--expert-cache-mb", o.expert_cache_mb,
                 "Keep the routed experts in the checkpoint files and read them on demand, "
                 "around the page cache, into a cache of this many MB (least recently used out); "
                 "0: resident")
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  cmd.add_option("--offload-gbps", o.offload_gbps,
                 "EMULATE slower storage: expert reads take at least bytes / this many Gbit/s")
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  cmd.add_flag("--no-stream-ahead", o.no_stream_ahead,
               "Read each expert only when it runs (no I/O thread streaming the next ones)")
      ->group(group);
}

CLI::Option* add_family_option(CLI::App& cmd, model::Family& family,
                               const std::string& help_extra) {
  std::vector<std::string> names;
  for (const model::FamilyInfo& f : model::families()) names.emplace_back(f.name);
  return cmd
      .add_option_function<std::string>(
          "--family", [&family](const std::string& name) { family = model::parse_family(name); },
          model::family_names() + help_extra)
      ->check(CLI::IsMember(names))
      ->default_str(std::string(model::family_info(family).name));
}

void add_scmoe_options(CLI::App& cmd, synth::SyntheticSpec& s) {
  const std::string group = "ScMoE (--family scmoe; docs/scmoe.md)";
  cmd.add_option("--scmoe-shortcut", s.scmoe_shortcut,
                 "Routed branch input: none, pos1 (previous layer output), pos2 (previous layer "
                 "after attention), pos3 (previous layer input)")
      ->check(CLI::IsMember({"none", "pos1", "pos2", "pos3"}))
      ->capture_default_str()
      ->group(group);
  cmd.add_option("--scmoe-combine", s.scmoe_combine,
                 "Shared + routed: add, cg1 (sigmoid-gated shared expert), cg2 (softmax over "
                 "both branches)")
      ->check(CLI::IsMember({"add", "cg1", "cg2"}))
      ->capture_default_str()
      ->group(group);
  cmd.add_option("--sparse-step", s.sparse_step,
                 "MoE in every N-th layer, counting from layer N-1 (0: the family's 2)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(group);
}

void scmoe_defaults(const ScMoeOptions& given, synth::SyntheticSpec& s) {
  if (s.family != model::Family::kScMoe) return;
  if (given.top_k && given.top_k->count() == 0) s.top_k = 1;
  if (given.shared_ffn && given.shared_ffn->count() == 0) s.shared_ffn = s.expert_ffn;
}

void add_capacity_options(CLI::App& cmd, CapacityOptions& o) {
  const std::string group = "Capacity-aware inference (papers.md section 1)";
  for (const moe::CapacitySetting& setting : moe::capacity_settings()) {
    const moe::CapacitySetting* st = &setting;
    if (st->on_switch) {
      cmd.add_flag_callback(
             st->flag, [&o, st] { st->on_switch(o.capacity); }, st->help)
          ->group(group);
    } else {
      cmd.add_option_function<std::string>(
             st->flag, [&o, st](const std::string& v) { st->set(o.capacity, v, st->flag); },
             st->help)
          ->group(group)
          ->type_name(st->value_name)
          ->default_str(st->get(o.capacity));
    }
  }
  auto* devices = cmd.add_option("--devices", o.devices,
                                 "Study expert parallelism over N devices: experts placed "
                                 "contiguously, each forward's tokens split into N slices")
                      ->group(group);
  auto* placement = cmd.add_option("--placement", o.placement_file,
                                   "Placement file: one line per device listing its expert ids "
                                   "('0 1 2'); '+e' adds a replica of expert e (mpirun only: "
                                   "the expert's rows are shared by its hosts); '#' comments")
                        ->group(group);
  devices->excludes(placement);
}

moe::MoeRuntime make_moe_runtime(const CapacityOptions& o, int num_experts, bool expert_parallel) {
  moe::MoeRuntime rt;
  rt.capacity = o.capacity;  // validated by each setting as it was parsed
  if (num_experts <= 0) {
    if (rt.capacity.active() || o.devices > 0 || !o.placement_file.empty())
      fail("this model has no MoE layers: capacity policies and placements do not apply");
    return rt;
  }
  if (!o.placement_file.empty())
    rt.placement = moe::Placement::from_file(o.placement_file, num_experts);
  else if (o.devices > 0 || o.devices < 0)
    rt.placement = moe::Placement::contiguous(num_experts, o.devices);
  if (rt.placement.replicated()) {
    if (!expert_parallel)
      fail(
          "placement file '{}' replicates experts ('+e'): replicas take effect only under expert "
          "parallelism (mpirun -np {}); one process runs every expert once",
          o.placement_file, rt.placement.num_devices());
    const moe::CapacityConfig& c = rt.capacity;
    if (c.policy == moe::CapacityPolicy::kExpanded || c.policy == moe::CapacityPolicy::kDevice ||
        (c.policy == moe::CapacityPolicy::kThreshold && c.load_aware))
      fail(
          "capacity policy {} counts each expert on one device, but placement file '{}' "
          "replicates experts: drop the '+e' replicas or use a token-level policy",
          c.describe(), o.placement_file);
  }
  if (rt.capacity.policy == moe::CapacityPolicy::kExpanded && rt.placement.empty())
    fmt::print(
        stderr,
        "warning: expanded drop without --devices or --placement makes every expert local: "
        "each expert then fills up to its capacity C (more expert compute than dropless; the "
        "authors' code does the same without local_expert_indices). Give --devices N to "
        "study N devices.\n");
  return rt;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      fail("--ids: '{}' is not a non-negative token id", item);
    }
    pos = end + 1;
  }
  return ids;
}

}  // namespace sy::cli
