#include "cli/precision_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/engine.h"
#include "io/file_util.h"
#include "util/error.h"

namespace sy::cli {

void add_precision_options(CLI::App& cmd, PrecisionOptions& o) {
  const std::string group = "ReaLB: per-rank precision (mpirun -np N, or --devices N emulated)";
  cmd.add_option("--precision-policy", o.policy,
                 "Precision of each rank's routed experts, per layer and step: bf16 (the stored "
                 "precision), low-all (every rank low), realb (a hot rank of a large step runs "
                 "low; see --realb-*)")
      ->capture_default_str()
      ->group(group)
      ->each([&o](const std::string&) { o.requested = true; });
  cmd.add_option("--low-precision", o.format,
                 "The low format: int8 (W8A8, per-row weight and per-token activation scales; "
                 "AVX-512 VNNI), q4 (Q4_0 blocks, int8 activations), nvfp4 (the paper's W4A4, "
                 "EMULATED in float32: accuracy only)")
      ->capture_default_str()
      ->group(group);
  cmd.add_option("--realb-batch-threshold", o.batch_threshold,
                 "realb: only steps with at least this many tokens over all ranks (compute-bound)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  cmd.add_option("--realb-hot-factor", o.hot_factor,
                 "realb: a rank is hot when its rows are at least this many times the mean")
      ->capture_default_str()
      ->check(CLI::PositiveNumber & kFiniteNumber)
      ->group(group);
  cmd.add_option("--modality-ids", o.modality_ids,
                 "realb: tag tokens whose ids fall in these ranges (\"100-199,300\") as the "
                 "vision modality; a hot rank then runs low only if >= --modality-threshold of "
                 "its rows are tagged")
      ->group(group);
  cmd.add_option("--modality-threshold", o.modality_threshold, "realb: M_d")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0))
      ->group(group);
  cmd.add_option("--precision-json", o.json, "Write every rank's choice per layer call as JSON")
      ->group(group);
}

moe::PrecisionPolicy precision_policy(const PrecisionOptions& o, int devices, bool offloaded) {
  moe::PrecisionPolicy p;
  p.mode = moe::parse_precision_mode(o.policy);
  p.format = moe::parse_low_format(o.format);
  p.batch_threshold = o.batch_threshold;
  p.hot_factor = o.hot_factor;
  p.modality_threshold = o.modality_threshold;
  p.requested = o.requested;
  if (!p.active()) {
    if (!o.modality_ids.empty())
      fail("--modality-ids is ReaLB's modality condition: add --precision-policy realb");
    return p;
  }
  if (const std::string why = moe::low_format_unavailable(p.format); !why.empty())
    fail("--low-precision {}: {}", o.format, why);
  if (offloaded)
    fail(
        "--precision-policy converts the experts a rank holds; offloaded experts "
        "(--expert-cache-mb) are not supported with it");
  if (p.mode == moe::PrecisionMode::kReaLB && devices < 2)
    fail(
        "--precision-policy realb balances ranks against each other: run under mpirun -np N, or "
        "emulate N devices in one process with --devices N (N >= 2)");
  return p;
}

namespace {

// Per record: layer, low, why, rows, experts, convert, hidden (seconds).
constexpr int kFields = 7;

std::vector<double> pack(const std::vector<moe::PrecisionRecord>& records) {
  std::vector<double> v;
  for (const moe::PrecisionRecord& r : records)
    v.insert(v.end(), {double(r.layer), double(r.low), double(int(r.why)), double(r.rows),
                       r.expert_s, r.convert_s, r.convert_hidden_s});
  return v;
}

}  // namespace

void report_precision(const Engine& eng, const PrecisionOptions& o) {
  const moe::PrecisionPolicy& policy = eng.runtime.precision;
  if (!policy.tracked()) return;
  // [rank][call] rows of kFields. Under mpirun every rank logged every layer call; in one
  // process the log holds each call's devices in turn.
  std::vector<std::vector<double>> ranks;
  std::string where;
  if (eng.distributed()) {
    const std::vector<double> mine = pack(eng.ep->precision_log());
    const std::vector<double> all = eng.comm->gather(mine);
    if (!eng.is_root()) return;
    for (int r = 0; r < eng.comm->size(); ++r)
      ranks.emplace_back(all.begin() + long(r * mine.size()),
                         all.begin() + long((r + 1) * mine.size()));
    where = fmt::format("{} ranks under mpirun", eng.comm->size());
  } else {
    const int D = eng.runtime.placement.empty() ? 1 : eng.runtime.placement.num_devices();
    ranks.resize(size_t(D));
    for (const moe::PrecisionRecord& r : eng.precision_log) {
      const std::vector<double> one = pack({r});
      ranks[size_t(r.device)].insert(ranks[size_t(r.device)].end(), one.begin(), one.end());
    }
    where = fmt::format(
        "{} devices EMULATED in one process (each device's experts timed in turn; no "
        "conversion is hidden)",
        D);
  }
  const size_t calls = ranks.empty() ? 0 : ranks[0].size() / kFields;
  for (const auto& r : ranks) SY_ASSERT(r.size() == calls * kFields);
  auto at = [&](size_t r, size_t call, int f) { return ranks[r][call * kFields + size_t(f)]; };

  constexpr int kWhy = int(moe::PrecisionWhy::kCount);
  std::string out = fmt::format("\nReaLB precision: {}; {}\n", policy.describe(), where);
  out += fmt::format("{:>5} {:>7} {:>6}", "rank", "calls", "low");
  for (int w = 0; w < kWhy; ++w)
    out += fmt::format(" {:>10}", moe::precision_why_short(moe::PrecisionWhy(w)));
  out += fmt::format(" {:>11} {:>11} {:>11} {:>8}\n", "rows/call", "experts ms", "convert ms",
                     "hidden");
  nlohmann::json jr = nlohmann::json::array();
  double slowest_total = 0;  // sum over calls of the slowest rank's experts + exposed conversion
  for (size_t c = 0; c < calls; ++c) {
    double slowest = 0;
    for (size_t r = 0; r < ranks.size(); ++r)
      slowest = std::max(slowest, at(r, c, 4) + at(r, c, 5) - at(r, c, 6));
    slowest_total += slowest;
  }
  for (size_t r = 0; r < ranks.size(); ++r) {
    std::array<int64_t, kWhy> why{};
    int64_t low = 0;
    double rows = 0, expert = 0, convert = 0, hidden = 0;
    nlohmann::json recs = nlohmann::json::array();
    for (size_t c = 0; c < calls; ++c) {
      low += at(r, c, 1) != 0;
      why[size_t(at(r, c, 2))] += 1;
      rows += at(r, c, 3), expert += at(r, c, 4), convert += at(r, c, 5), hidden += at(r, c, 6);
      recs.push_back({{"layer", int(at(r, c, 0))},
                      {"low", at(r, c, 1) != 0},
                      {"why", moe::precision_why_name(moe::PrecisionWhy(int(at(r, c, 2))))},
                      {"rows", int64_t(at(r, c, 3))},
                      {"expert_s", at(r, c, 4)},
                      {"convert_s", at(r, c, 5)},
                      {"convert_hidden_s", at(r, c, 6)}});
    }
    out += fmt::format("{:>5} {:>7} {:>6}", r, calls, low);
    for (int w = 0; w < kWhy; ++w) out += fmt::format(" {:>10}", why[size_t(w)]);
    out += fmt::format(" {:>11.1f} {:>11.2f} {:>11.2f} {:>7.0f}%\n",
                       calls ? rows / double(calls) : 0.0, 1e3 * expert, 1e3 * convert,
                       convert > 0 ? 100.0 * hidden / convert : 0.0);
    jr.push_back({{"rank", r},
                  {"calls", calls},
                  {"low_calls", low},
                  {"expert_s", expert},
                  {"convert_s", convert},
                  {"convert_hidden_s", hidden},
                  {"records", recs}});
  }
  // Per layer: each rank's low calls and its most frequent reason.
  std::map<int, std::vector<std::array<int64_t, kWhy + 2>>> per_layer;  // why..., low, calls
  for (size_t r = 0; r < ranks.size(); ++r)
    for (size_t c = 0; c < calls; ++c) {
      auto& v = per_layer[int(at(r, c, 0))];
      v.resize(ranks.size());
      v[r][size_t(at(r, c, 2))] += 1;
      v[r][kWhy] += at(r, c, 1) != 0;
      v[r][kWhy + 1] += 1;
    }
  out += fmt::format("per layer, each rank's low calls / calls (most frequent reason):\n{:>6}",
                     "layer");
  for (size_t r = 0; r < ranks.size(); ++r)
    out += fmt::format(" {:>22}", fmt::format("rank {}", r));
  out += "\n";
  for (const auto& [layer, v] : per_layer) {
    out += fmt::format("{:>6}", layer);
    for (const auto& w : v) {
      const auto top = std::max_element(w.begin(), w.begin() + kWhy) - w.begin();
      out += fmt::format(" {:>22}", fmt::format("{}/{} ({})", w[kWhy], w[kWhy + 1],
                                                moe::precision_why_short(moe::PrecisionWhy(top))));
    }
    out += "\n";
  }
  out += "reasons: ";
  for (int w = 0; w < kWhy; ++w)
    out += fmt::format("{}{} = {}", w ? "; " : "", moe::precision_why_short(moe::PrecisionWhy(w)),
                       moe::precision_why_name(moe::PrecisionWhy(w)));
  out += fmt::format(
      "\nslowest rank's MoE time, summed over layer calls (experts + conversion not hidden): "
      "{:.2f} ms\n",
      1e3 * slowest_total);
  fmt::print(stderr, "{}", out);
  if (!o.json.empty())
    io::write_text_file_atomic(o.json, nlohmann::json({{"policy", policy.describe()},
                                                       {"where", where},
                                                       {"slowest_rank_moe_s", slowest_total},
                                                       {"ranks", jr}})
                                               .dump(2) +
                                           "\n");
}

}  // namespace sy::cli
