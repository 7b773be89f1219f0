// Driver for the capacity-policy reference comparison (tests/reference/test_capacity_vs_torch.sh):
//   sy_capacity DIR
// reads DIR/cases.json + DIR/cases.bin (written by tests/reference/capacity_reference.py
// generate), runs Switchyard's apply_capacity on every case and writes DIR/results.json +
// DIR/results.bin: per case out_slots, the CapacityOutcome counts and the byte offsets of
// out_ids [T, out_slots] int32 and out_weights [T, out_slots] float32 (little-endian), or
// "error" with the message when Switchyard threw sy::Error for that case.
#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/capacity.h"
#include "moe/placement.h"
#include "moe/router.h"
#include "util/error.h"

namespace {

static_assert(std::endian::native == std::endian::little, "case files are little-endian");

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) sy::fail("cannot open '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <typename T>
std::vector<T> slice(const std::string& blob, int64_t offset, int64_t count, const char* what) {
  const size_t bytes = size_t(count) * sizeof(T);
  if (offset < 0 || size_t(offset) + bytes > blob.size())
    sy::fail("cases.bin: {} at offset {} ({} bytes) is past the end ({} bytes)", what, offset,
             bytes, blob.size());
  std::vector<T> out(static_cast<size_t>(count));
  if (bytes) std::memcpy(out.data(), blob.data() + offset, bytes);
  return out;
}

nlohmann::json run_case(const nlohmann::json& c, const std::string& blob, std::string& out_blob) {
  using namespace sy::moe;
  const int64_t T = c.at("T");
  const int E = c.at("E");
  const int k = c.at("k");
  const auto scores = slice<float>(blob, c.at("scores_off"), T * E, "scores");
  const auto ids = slice<int32_t>(blob, c.at("ids_off"), T * k, "ids");
  const auto weights = slice<float>(blob, c.at("weights_off"), T * k, "weights");

  CapacityConfig config;
  config.policy = parse_capacity_policy(c.at("policy").get<std::string>());
  config.factor = c.at("gamma");
  config.renormalize = c.at("renormalize");
  config.skip_single_token = c.at("skip_single_token");
  config.reroute_rounds = c.at("reroute_rounds");
  config.seed = c.at("seed");

  RouterConfig router;
  router.num_experts = E;
  router.top_k = k;
  router.score = c.at("score_func") == "sigmoid" ? ScoreFunc::kSigmoid : ScoreFunc::kSoftmax;
  router.renormalize = c.at("router_renormalize");
  router.routed_scaling_factor = c.at("routed_scaling_factor");

  Placement placement;
  const std::vector<int32_t> map = c.at("placement");
  if (!map.empty()) placement = Placement::from_map(map, c.at("num_devices"));

  const int slots = capacity_slots(config, k, E, placement);
  std::vector<int32_t> out_ids(size_t(T * slots), 12345);  // garbage: every slot must be written
  std::vector<float> out_weights(size_t(T * slots), -7.0f);
  CapacityOutcome outcome;
  outcome.reset(E);
  apply_capacity(config, router, scores.data(), ids.data(), weights.data(), T, placement,
                 c.at("source_device"),
                 CapacityCall{c.at("rng_stream").get<uint64_t>(), c.value("decode_step", false)},
                 out_ids.data(), out_weights.data(), slots, outcome);

  nlohmann::json r;
  r["out_slots"] = slots;
  r["ids_off"] = out_blob.size();
  out_blob.append(reinterpret_cast<const char*>(out_ids.data()), out_ids.size() * sizeof(int32_t));
  r["weights_off"] = out_blob.size();
  out_blob.append(reinterpret_cast<const char*>(out_weights.data()),
                  out_weights.size() * sizeof(float));
  r["load_before"] = outcome.load_before;
  r["load_after"] = outcome.load_after;
  r["routed"] = outcome.routed;
  r["overflow"] = outcome.overflow;
  r["dropped"] = outcome.dropped;
  r["added"] = outcome.added;
  r["rerouted"] = outcome.rerouted;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 2)
      sy::fail(
          "usage: sy_capacity DIR  (reads DIR/cases.{{json,bin}}, writes "
          "DIR/results.{{json,bin}})");
    const std::string dir = argv[1];
    const nlohmann::json cases = nlohmann::json::parse(read_file(dir + "/cases.json")).at("cases");
    const std::string blob = read_file(dir + "/cases.bin");
    std::string out_blob;
    nlohmann::json results = nlohmann::json::array();
    for (const auto& c : cases) {
      try {
        results.push_back(run_case(c, blob, out_blob));
      } catch (const sy::Error& e) {
        results.push_back({{"error", e.what()}});
      }
    }
    std::ofstream(dir + "/results.bin", std::ios::binary)
        .write(out_blob.data(), std::streamsize(out_blob.size()));
    std::ofstream(dir + "/results.json") << nlohmann::json{{"results", results}}.dump() << "\n";
    std::cout << "sy_capacity: " << results.size() << " cases\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "sy_capacity: " << e.what() << "\n";
    return 1;
  }
}
