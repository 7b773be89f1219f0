// Routing traces (src/moe/routing_trace.h): what the writer observes comes back unchanged
// from the file (ids padded to the widest call), the file is a plain safetensors file with
// the documented tensor names, dtypes and metadata, and broken traces are rejected with a
// message naming the file and the problem.
#include <gtest/gtest.h>

#include <stdlib.h>
#include "expect_error.h"
#include "temp_dir.h"

#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "moe/dispatch.h"
#include "moe/routing_trace.h"
#include "util/error.h"

namespace sy::moe {
namespace {

using sy::testing::expect_error;

namespace fs = std::filesystem;

using sy::testing::TempDir;

// One synthetic layer call, owning its arrays.
struct Call {
  int layer, E, K, S;
  int64_t T;
  std::vector<float> scores, router_weights, weights;
  std::vector<int32_t> router_ids, ids;

  RoutingRecord record() const {
    return {layer,
            T,
            E,
            K,
            S,
            scores.data(),
            router_ids.data(),
            router_weights.data(),
            ids.data(),
            weights.data()};
  }
};

Call make_call(int layer, int64_t T, int E, int K, int S, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  Call c{layer, E, K, S, T, {}, {}, {}, {}, {}};
  for (int64_t i = 0; i < T * E; ++i) c.scores.push_back(u(rng));
  for (int64_t t = 0; t < T; ++t) {
    for (int k = 0; k < K; ++k) {
      c.router_ids.push_back(int32_t((t + k * 3 + seed) % uint32_t(E)));
      c.router_weights.push_back(u(rng));
    }
    for (int s = 0; s < S; ++s) {
      const bool dropped = (t + s) % 4 == 3;
      c.ids.push_back(dropped ? kDroppedExpert : int32_t((t * 7 + s + seed) % uint32_t(E)));
      c.weights.push_back(dropped ? 0.0f : u(rng));
    }
  }
  return c;
}

RoutingTraceInfo sample_info() {
  RoutingTraceInfo info;
  info.model = "/models/tiny";
  info.architecture = "Qwen3MoeForCausalLM";
  info.num_layers = 5;
  info.router.num_experts = 8;
  info.router.top_k = 2;
  info.router.score = ScoreFunc::kSigmoid;
  info.router.renormalize = true;
  info.router.renormalize_epsilon = 1e-20f;
  info.router.routed_scaling_factor = 2.5f;
  info.router.num_groups = 4;
  info.router.topk_groups = 2;
  info.router.group_score = GroupScore::kMax;
  info.capacity.policy = CapacityPolicy::kExpanded;
  info.capacity.factor = 1.25;
  info.capacity.seed = 42;
  info.placement = "2 devices";
  info.extra["prompt"] = "hello";
  return info;
}

TEST(RoutingTrace, RoundTripWithPaddingAndMetadata) {
  // Layer 1: top-2 calls with 2 slots, then an expanded-drop call with 6 slots, then a
  // decode step. Layer 3: two calls. Layer 0, 2, 4 are dense (never observed).
  std::vector<Call> calls = {make_call(1, 5, 8, 2, 2, 1), make_call(3, 5, 8, 2, 2, 2),
                             make_call(1, 3, 8, 2, 6, 3), make_call(3, 3, 8, 2, 2, 4),
                             make_call(1, 1, 8, 2, 2, 5)};
  RoutingTraceWriter writer;
  for (const auto& c : calls) writer.observe(c.record());
  EXPECT_EQ(writer.num_calls(), 5);
  TempDir dir;
  const std::string path = dir.file("trace.safetensors");
  writer.finish(path, sample_info());

  // The file as a plain safetensors file: documented names, dtypes and shapes.
  {
    io::SafetensorsFile f(path);
    EXPECT_EQ(f.tensors().size(), 12u);
    for (const auto& t : f.tensors()) {
      const bool ints = t.name.ends_with("ids") || t.name.ends_with("call_tokens");
      EXPECT_EQ(t.dtype_name, ints ? "I32" : "F32") << t.name;
      if (t.name == "layer.1.ids") {
        EXPECT_EQ(t.shape_str(), "[9, 6]");
      }
      if (t.name == "layer.1.scores") {
        EXPECT_EQ(t.shape_str(), "[9, 8]");
      }
      if (t.name == "layer.3.weights") {
        EXPECT_EQ(t.shape_str(), "[8, 2]");
      }
      if (t.name == "layer.1.call_tokens") {
        EXPECT_EQ(t.shape_str(), "[3]");
      }
    }
    EXPECT_EQ(f.metadata().at("format"), "switchyard-routing-trace");
    EXPECT_EQ(f.metadata().at("format_version"), "1");
    EXPECT_EQ(f.metadata().at("capacity_policy"), "expanded");
    EXPECT_EQ(f.metadata().at("model"), "/models/tiny");
    EXPECT_EQ(f.metadata().at("prompt"), "hello");
  }

  const RoutingTrace trace = read_routing_trace(path);
  EXPECT_EQ(trace.num_layers(), 5);
  ASSERT_EQ(trace.layers.size(), 2u);
  EXPECT_EQ(trace.find(0), nullptr);
  EXPECT_EQ(trace.info.model, "/models/tiny");
  EXPECT_EQ(trace.info.architecture, "Qwen3MoeForCausalLM");
  EXPECT_EQ(trace.info.placement, "2 devices");
  EXPECT_EQ(trace.info.extra.at("prompt"), "hello");
  EXPECT_EQ(trace.info.capacity.policy, CapacityPolicy::kExpanded);
  EXPECT_EQ(trace.info.capacity.factor, 1.25);
  EXPECT_EQ(trace.info.capacity.seed, 42u);
  const RouterConfig& r = trace.info.router;
  EXPECT_EQ(r.num_experts, 8);
  EXPECT_EQ(r.top_k, 2);
  EXPECT_EQ(r.score, ScoreFunc::kSigmoid);
  EXPECT_TRUE(r.renormalize);
  EXPECT_EQ(r.renormalize_epsilon, 1e-20f);
  EXPECT_EQ(r.routed_scaling_factor, 2.5f);
  EXPECT_EQ(r.num_groups, 4);
  EXPECT_EQ(r.topk_groups, 2);
  EXPECT_EQ(r.group_score, GroupScore::kMax);

  for (int layer : {1, 3}) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    const RoutingTraceLayer* L = trace.find(layer);
    ASSERT_NE(L, nullptr);
    EXPECT_EQ(L->num_experts, 8);
    EXPECT_EQ(L->top_k, 2);
    EXPECT_EQ(L->slots, layer == 1 ? 6 : 2);
    int64_t row = 0;
    std::vector<int32_t> expected_calls;
    for (const auto& c : calls) {
      if (c.layer != layer) continue;
      expected_calls.push_back(int32_t(c.T));
      for (int64_t t = 0; t < c.T; ++t, ++row) {
        for (int e = 0; e < 8; ++e)
          EXPECT_EQ(L->scores[size_t(row * 8 + e)], c.scores[size_t(t * 8 + e)]);
        for (int k = 0; k < 2; ++k) {
          EXPECT_EQ(L->router_ids[size_t(row * 2 + k)], c.router_ids[size_t(t * 2 + k)]);
          EXPECT_EQ(L->router_weights[size_t(row * 2 + k)], c.router_weights[size_t(t * 2 + k)]);
        }
        for (int s = 0; s < L->slots; ++s) {
          const size_t at = size_t(row * L->slots + s);
          if (s < c.S) {
            EXPECT_EQ(L->ids[at], c.ids[size_t(t * c.S + s)]) << "row " << row << " slot " << s;
            EXPECT_EQ(L->weights[at], c.weights[size_t(t * c.S + s)]);
          } else {
            EXPECT_EQ(L->ids[at], kDroppedExpert) << "padding, row " << row << " slot " << s;
            EXPECT_EQ(L->weights[at], 0.0f);
          }
        }
      }
    }
    EXPECT_EQ(L->num_tokens, row);
    EXPECT_EQ(L->call_tokens, expected_calls);
  }
}

TEST(RoutingTrace, ManyTokensAndLayers) {
  // 2048 tokens x 64 experts x 24 layers, top-8, in 4 calls per layer (~20 MB of trace).
  RoutingTraceWriter writer;
  for (int call = 0; call < 4; ++call)
    for (int layer = 0; layer < 24; ++layer) {
      const Call c = make_call(layer, 512, 64, 8, 8, uint32_t(layer * 10 + call));
      writer.observe(c.record());
    }
  TempDir dir;
  writer.finish(dir.file("big.safetensors"), {});
  const RoutingTrace trace = read_routing_trace(dir.file("big.safetensors"));
  ASSERT_EQ(trace.layers.size(), 24u);
  EXPECT_EQ(trace.num_layers(), 24);
  EXPECT_EQ(trace.info.router.num_experts, 64) << "taken from the tensors";
  EXPECT_EQ(trace.info.router.top_k, 8);
  EXPECT_EQ(trace.info.capacity.policy, CapacityPolicy::kNone);
  for (const auto& L : trace.layers) {
    EXPECT_EQ(L.num_tokens, 2048);
    EXPECT_EQ(L.scores.size(), 2048u * 64u);
    EXPECT_EQ(L.call_tokens, (std::vector<int32_t>{512, 512, 512, 512}));
  }
  std::vector<int32_t> ids;  // layer 23's final ids, the 4 calls concatenated
  std::vector<float> scores;
  for (int call = 0; call < 4; ++call) {
    const Call c = make_call(23, 512, 64, 8, 8, uint32_t(230 + call));
    ids.insert(ids.end(), c.ids.begin(), c.ids.end());
    scores.insert(scores.end(), c.scores.begin(), c.scores.end());
  }
  EXPECT_TRUE(trace.find(23)->ids == ids);
  EXPECT_TRUE(trace.find(23)->scores == scores);
}

// A valid trace's tensors and metadata, to break one thing at a time.
struct RawTrace {
  std::vector<float> scores = std::vector<float>(4 * 4, 0.25f);
  std::vector<int32_t> router_ids = {0, 1, 2, 3, 1, 0, 3, 2};
  std::vector<float> router_weights = std::vector<float>(8, 0.5f);
  std::vector<int32_t> ids = {0, 1, 2, -1, 1, 0, 3, 2};
  std::vector<float> weights = {0.5f, 0.5f, 0.5f, 0, 0.5f, 0.5f, 0.5f, 0.5f};
  std::vector<int32_t> call_tokens = {3, 1};
  std::vector<int64_t> ids_shape = {4, 2};
  std::string ids_dtype = "I32";
  bool skip_weights = false;
  std::string extra_name;
  std::map<std::string, std::string> meta = {{"format", "switchyard-routing-trace"},
                                             {"format_version", "1"},
                                             {"router", R"({"num_experts": 4, "top_k": 2})"}};

  void write(const std::string& path) const {
    std::vector<io::TensorToWrite> t;
    auto add = [&](const std::string& name, const char* dtype, std::vector<int64_t> shape,
                   const void* data, size_t bytes) {
      t.push_back({name, dtype, shape, data, bytes});
    };
    add("layer.2.scores", "F32", {4, 4}, scores.data(), scores.size() * 4);
    add("layer.2.router_ids", "I32", {4, 2}, router_ids.data(), router_ids.size() * 4);
    add("layer.2.router_weights", "F32", {4, 2}, router_weights.data(), router_weights.size() * 4);
    add("layer.2.ids", ids_dtype.c_str(), ids_shape, ids.data(), ids.size() * 4);
    if (!skip_weights) add("layer.2.weights", "F32", {4, 2}, weights.data(), weights.size() * 4);
    add("layer.2.call_tokens", "I32", {int64_t(call_tokens.size())}, call_tokens.data(),
        call_tokens.size() * 4);
    if (!extra_name.empty()) add(extra_name, "F32", {1}, scores.data(), 4);
    io::write_safetensors(path, t, meta);
  }
};

TEST(RoutingTrace, BrokenTracesAreClearErrors) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  RawTrace good;
  good.write(path);
  EXPECT_EQ(read_routing_trace(path).find(2)->num_tokens, 4) << "the control case reads";

  auto check = [&](const std::function<void(RawTrace&)>& breakit,
                   std::vector<std::string> needles) {
    RawTrace bad;
    breakit(bad);
    bad.write(path);
    needles.push_back(path);
    expect_error([&] { read_routing_trace(path); }, needles);
  };
  check(
      [](RawTrace& t) {
        t.meta = {{"format", "pt"}};
      },
      {"not a Switchyard routing trace", "model checkpoint"});
  check([](RawTrace& t) { t.meta.erase("format"); },
        {"not a Switchyard routing trace", "no 'format'"});
  check([](RawTrace& t) { t.meta["format_version"] = "2"; }, {"version 2", "newer Switchyard"});
  check([](RawTrace& t) { t.meta["format_version"] = "one"; }, {"'one' is not an integer"});
  check([](RawTrace& t) { t.skip_weights = true; }, {"layer 2 has no tensor 'layer.2.weights'"});
  check([](RawTrace& t) { t.extra_name = "model.norm.weight"; },
        {"unexpected tensor 'model.norm.weight'"});
  check([](RawTrace& t) { t.extra_name = "layer.2.logits"; },
        {"unexpected tensor 'layer.2.logits'"});
  check(
      [](RawTrace& t) {
        t.ids_shape = {2, 4};
      },
      {"'layer.2.ids'", "shape [2, 4]", "layer 2 has 4 tokens"});
  check([](RawTrace& t) { t.ids_shape = {8}; }, {"'layer.2.ids'", "expected 2 dimensions"});
  check([](RawTrace& t) { t.ids_dtype = "F32"; }, {"'layer.2.ids' is F32, expected I32"});
  check(
      [](RawTrace& t) {
        t.call_tokens = {3, 2};
      },
      {"layer.2.call_tokens", "adds up to 5", "hold 4"});
  check([](RawTrace& t) { t.call_tokens = {5, -1}; }, {"layer.2.call_tokens[1] = -1"});
  check([](RawTrace& t) { t.ids[5] = 4; }, {"layer.2.ids[2, 1] = 4", "below 4"});
  check([](RawTrace& t) { t.router_ids[0] = -7; }, {"layer.2.router_ids[0, 0] = -7"});
  check([](RawTrace& t) { t.scores[3] = std::nanf(""); }, {"layer.2.scores[0, 3]", "not finite"});
  check([](RawTrace& t) { t.meta["router"] = R"({"num_experts": 8, "top_k": 2})"; },
        {"metadata router has 8 experts but layer 2 has 4"});
  check([](RawTrace& t) { t.meta["router"] = R"({"num_experts": 4, "topk": 2})"; },
        {"unknown key 'topk'"});
  check([](RawTrace& t) { t.meta["router"] = R"({"score": "cosine"})"; },
        {"router score", "cosine"});
  check([](RawTrace& t) { t.meta["capacity_factor"] = "lots"; }, {"capacity_factor", "'lots'"});
  check([](RawTrace& t) { t.meta["num_layers"] = "2"; },
        {"num_layers = 2", "layer 2 was recorded"});

  expect_error([&] { read_routing_trace(dir.file("missing.safetensors")); },
               {"missing.safetensors"});
}

TEST(RoutingTrace, WriterErrors) {
  TempDir dir;
  RoutingTraceWriter empty;
  expect_error([&] { empty.finish(dir.file("e.safetensors"), {}); }, {"nothing was recorded"});
  EXPECT_FALSE(fs::exists(dir.file("e.safetensors")));

  RoutingTraceWriter writer;
  writer.observe(make_call(0, 2, 4, 1, 1, 0).record());
  RoutingTraceInfo info;
  info.extra["format"] = "mine";
  expect_error([&] { writer.finish(dir.file("r.safetensors"), info); }, {"'format' is reserved"});
  expect_error([&] { writer.finish(dir.file("no/such/dir/t.safetensors"), {}); },
               {"no/such/dir/t.safetensors"});
}

}  // namespace
}  // namespace sy::moe
