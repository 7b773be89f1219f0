// Command-line driver for the router reference test (tests/reference/test_router_vs_torch.sh):
//   sy_route CASES_JSON OUT_JSON
// CASES_JSON: {"cases": [{"name": str, "mode": "route" | "noisy" | "expert_choice",
//   "num_tokens": T, "num_experts": E, "logits": [T*E floats],
//   route / noisy: "config": {"top_k", "score" (softmax | sigmoid | softmax-topk | sigmoid-topk),
//     "renormalize", "renormalize_epsilon", "routed_scaling_factor", "num_groups",
//     "topk_groups", "group_score" (max | top2_sum)}, optional "bias": [E floats];
//   noisy: "noise_logits": [T*E floats], "seed", "stream";
//   expert_choice: "capacity_factor"}]}
// OUT_JSON: {"cases": [{"name", "ids", "weights", "scores", "noise" (noisy only),
//   "describe"}]}, row-major flat lists ([T, k] or [T, E] for expert choice).
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/router.h"
#include "util/error.h"

namespace {

using nlohmann::json;
using namespace sy::moe;

std::vector<float> floats(const json& j, size_t expect, const char* what) {
  std::vector<float> v = j.get<std::vector<float>>();
  if (v.size() != expect) sy::fail("'{}' has {} values, expected {}", what, v.size(), expect);
  return v;
}

RouterConfig router_config(const json& j, int E) {
  RouterConfig c;
  c.num_experts = E;
  c.top_k = j.at("top_k").get<int>();
  c.score = parse_score_func(j.value("score", std::string("softmax")));
  c.renormalize = j.value("renormalize", false);
  c.renormalize_epsilon = j.value("renormalize_epsilon", 0.0f);
  c.routed_scaling_factor = j.value("routed_scaling_factor", 1.0f);
  c.num_groups = j.value("num_groups", 1);
  c.topk_groups = j.value("topk_groups", 1);
  const std::string gs = j.value("group_score", std::string("top2_sum"));
  if (gs == "max")
    c.group_score = GroupScore::kMax;
  else if (gs == "top2_sum")
    c.group_score = GroupScore::kTop2Sum;
  else
    sy::fail("unknown group_score '{}' (valid: max, top2_sum)", gs);
  if (c.top_k < 1 || c.top_k > E) sy::fail("top_k {} out of range for {} experts", c.top_k, E);
  if (c.num_groups < 1 || E % c.num_groups != 0 || c.topk_groups < 1 ||
      c.topk_groups > c.num_groups)
    sy::fail("bad groups {}/{} for {} experts", c.topk_groups, c.num_groups, E);
  return c;
}

json run_case(const json& cs) {
  const std::string mode = cs.at("mode").get<std::string>();
  const int64_t T = cs.at("num_tokens").get<int64_t>();
  const int E = cs.at("num_experts").get<int>();
  if (T < 0 || E < 1) sy::fail("bad shape T={} E={}", T, E);
  const std::vector<float> logits = floats(cs.at("logits"), size_t(T) * size_t(E), "logits");
  json out = {{"name", cs.value("name", std::string())}};
  std::vector<float> scores(size_t(T) * size_t(E));
  if (mode == "expert_choice") {
    const double cf = cs.at("capacity_factor").get<double>();
    if (!(cf >= 0)) sy::fail("capacity_factor must be >= 0");
    std::vector<int32_t> ids(size_t(T) * size_t(E));
    std::vector<float> w(size_t(T) * size_t(E));
    route_expert_choice(logits.data(), T, E, cf, ids.data(), w.data(), scores.data());
    out["ids"] = ids, out["weights"] = w, out["scores"] = scores;
    out["describe"] = describe_expert_choice(E, cf);
    return out;
  }
  RouterConfig c = router_config(cs.at("config"), E);
  std::vector<int32_t> ids(size_t(T) * size_t(c.top_k));
  std::vector<float> w(size_t(T) * size_t(c.top_k));
  if (mode == "route") {
    std::vector<float> bias;
    if (cs.contains("bias") && !cs["bias"].is_null()) {
      bias = floats(cs["bias"], size_t(E), "bias");
      c.has_selection_bias = true;
    }
    route(c, logits.data(), T, bias.empty() ? nullptr : bias.data(), ids.data(), w.data(),
          scores.data());
  } else if (mode == "noisy") {
    const std::vector<float> noise_logits =
        floats(cs.at("noise_logits"), size_t(T) * size_t(E), "noise_logits");
    std::vector<float> noise(size_t(T) * size_t(E));
    route_noisy(c, logits.data(), noise_logits.data(), T, cs.at("seed").get<uint64_t>(),
                cs.at("stream").get<uint64_t>(), ids.data(), w.data(), scores.data(), noise.data());
    out["noise"] = noise;
  } else {
    sy::fail("unknown mode '{}' (valid: route, noisy, expert_choice)", mode);
  }
  out["ids"] = ids, out["weights"] = w, out["scores"] = scores;
  out["describe"] = c.describe();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 3) sy::fail("usage: sy_route CASES_JSON OUT_JSON");
    std::ifstream in(argv[1]);
    if (!in) sy::fail("cannot open '{}'", argv[1]);
    json cases;
    try {
      cases = json::parse(in);
    } catch (const json::exception& e) {
      sy::fail("'{}': {}", argv[1], e.what());
    }
    json out = {{"cases", json::array()}};
    for (const json& cs : cases.at("cases")) {
      try {
        out["cases"].push_back(run_case(cs));
      } catch (const json::exception& e) {
        sy::fail("case '{}': {}", cs.value("name", std::string("?")), e.what());
      }
    }
    std::ofstream o(argv[2]);
    o << out.dump() << "\n";
    if (!o) sy::fail("cannot write '{}'", argv[2]);
    return 0;
  } catch (const sy::Error& e) {
    std::cerr << "sy_route: " << e.what() << "\n";
    return 1;
  }
}
