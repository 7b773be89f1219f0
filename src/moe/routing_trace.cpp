#include "moe/routing_trace.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>

#include "io/safetensors.h"
#include "moe/dispatch.h"
#include "util/error.h"
#include "util/parse.h"

namespace sy::moe {
namespace {

using json = nlohmann::json;

// The per-layer tensors, in the order they are written.
constexpr const char* kFields[] = {"scores", "router_ids", "router_weights",
                                   "ids",    "weights",    "call_tokens"};

// Metadata keys the writer owns; RoutingTraceInfo::extra may not use them.
const char* const kReservedKeys[] = {"format",   "format_version", "num_layers",   "router",
                                     "capacity", "model",          "architecture", "placement"};

// Metadata keys the writer owns: the fixed ones and every capacity setting's.
bool is_reserved(const std::string& key) {
  for (const char* k : kReservedKeys)
    if (key == k) return true;
  for (const CapacitySetting& c : capacity_settings())
    if (key == c.key) return true;
  return false;
}

// Widens the [N, old_slots] table to [N, new_slots], padding each row with `pad`.
template <typename T>
void widen_rows(std::vector<T>& table, int64_t rows, int old_slots, int new_slots, T pad) {
  std::vector<T> wide(size_t(rows) * size_t(new_slots), pad);
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(table.begin() + r * old_slots, old_slots, wide.begin() + r * new_slots);
  table.swap(wide);
}

template <typename T>
io::TensorToWrite tensor(const std::string& name, const char* dtype, std::vector<int64_t> shape,
                         const std::vector<T>& data) {
  return {name, dtype, std::move(shape), data.data(), data.size() * sizeof(T)};
}

template <typename T>
std::vector<T> copy_out(const io::TensorInfo& t) {
  std::vector<T> v(t.nbytes / sizeof(T));
  if (t.nbytes) std::memcpy(v.data(), t.data, t.nbytes);  // the mapping may be unaligned
  return v;
}

}  // namespace

const RoutingTraceLayer* RoutingTrace::find(int layer) const {
  for (const auto& l : layers)
    if (l.layer == layer) return &l;
  return nullptr;
}

int RoutingTrace::num_layers() const {
  if (info.num_layers > 0) return info.num_layers;
  return layers.empty() ? 0 : layers.back().layer + 1;
}

void RoutingTraceWriter::observe(const RoutingRecord& r) {
  SY_ASSERT(r.layer >= 0 && r.num_tokens >= 0 && r.num_tokens <= INT32_MAX);
  SY_ASSERT(r.num_experts > 0 && r.top_k > 0 && r.slots >= r.top_k);
  SY_ASSERT(r.num_tokens == 0 ||
            (r.scores && r.router_ids && r.router_weights && r.ids && r.weights));
  const int64_t T = r.num_tokens;
  const size_t E = size_t(r.num_experts), K = size_t(r.top_k), S_in = size_t(r.slots);

  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, fresh] = layers_.try_emplace(r.layer);
  RoutingTraceLayer& L = it->second;
  if (fresh) {
    L.layer = r.layer;
    L.num_experts = r.num_experts;
    L.top_k = r.top_k;
    L.slots = r.slots;
  }
  SY_ASSERT_MSG(L.num_experts == r.num_experts && L.top_k == r.top_k,
                "a layer's expert count or top-k changed between calls");
  if (r.slots > L.slots) {  // a policy with more slots than earlier calls: widen the past
    widen_rows(L.ids, L.num_tokens, L.slots, r.slots, kDroppedExpert);
    widen_rows(L.weights, L.num_tokens, L.slots, r.slots, 0.0f);
    L.slots = r.slots;
  }
  const size_t S = size_t(L.slots);
  L.scores.insert(L.scores.end(), r.scores, r.scores + T * int64_t(E));
  L.router_ids.insert(L.router_ids.end(), r.router_ids, r.router_ids + T * int64_t(K));
  L.router_weights.insert(L.router_weights.end(), r.router_weights,
                          r.router_weights + T * int64_t(K));
  const size_t base = L.ids.size();
  L.ids.resize(base + size_t(T) * S, kDroppedExpert);
  L.weights.resize(base + size_t(T) * S, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(r.ids + t * int64_t(S_in), S_in, L.ids.begin() + int64_t(base) + t * int64_t(S));
    std::copy_n(r.weights + t * int64_t(S_in), S_in,
                L.weights.begin() + int64_t(base) + t * int64_t(S));
  }
  L.num_tokens += T;
  L.call_tokens.push_back(int32_t(T));
}

int64_t RoutingTraceWriter::num_calls() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t n = 0;
  for (const auto& [layer, L] : layers_) n += int64_t(L.call_tokens.size());
  return n;
}

void RoutingTraceWriter::finish(const std::string& path, const RoutingTraceInfo& info) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (layers_.empty())
    fail("routing trace '{}': nothing was recorded (no MoE layer ran), so no file was written",
         path);

  std::vector<io::TensorToWrite> tensors;
  for (const auto& [l, L] : layers_) {
    const std::string p = fmt::format("layer.{}.", l);
    const int64_t N = L.num_tokens;
    tensors.push_back(tensor(p + "scores", "F32", {N, L.num_experts}, L.scores));
    tensors.push_back(tensor(p + "router_ids", "I32", {N, L.top_k}, L.router_ids));
    tensors.push_back(tensor(p + "router_weights", "F32", {N, L.top_k}, L.router_weights));
    tensors.push_back(tensor(p + "ids", "I32", {N, L.slots}, L.ids));
    tensors.push_back(tensor(p + "weights", "F32", {N, L.slots}, L.weights));
    tensors.push_back(
        tensor(p + "call_tokens", "I32", {int64_t(L.call_tokens.size())}, L.call_tokens));
  }

  RouterConfig router = info.router;
  const RoutingTraceLayer& first = layers_.begin()->second;
  if (router.num_experts == 0) router.num_experts = first.num_experts;
  if (router.top_k == 0) router.top_k = first.top_k;
  std::map<std::string, std::string> meta;
  for (const auto& [key, value] : info.extra) {
    if (is_reserved(key))
      fail("routing trace '{}': extra metadata key '{}' is reserved", path, key);
    meta[key] = value;
  }
  meta["format"] = kRoutingTraceFormat;
  meta["format_version"] = std::to_string(kRoutingTraceVersion);
  meta["num_layers"] = std::to_string(std::max(info.num_layers, layers_.rbegin()->first + 1));
  meta["router"] = router_config_json(router);
  meta["capacity"] = info.capacity.describe();
  for (const CapacitySetting& c : capacity_settings()) meta[c.key] = c.get(info.capacity);
  meta["model"] = info.model;
  meta["architecture"] = info.architecture;
  meta["placement"] = info.placement;
  io::write_safetensors(path, tensors, meta);
}

RoutingTrace read_routing_trace(const std::string& path) {
  io::SafetensorsFile file(path);  // errors name the file
  const auto& meta = file.metadata();
  const std::string where = fmt::format("routing trace '{}'", path);
  auto format = meta.find("format");
  if (format == meta.end() || format->second != kRoutingTraceFormat)
    fail(
        "'{}' is not a Switchyard routing trace: its metadata has {} instead of format = {}{} "
        "(write one with `switchyard score --trace FILE` or `generate --trace FILE`)",
        path, format == meta.end() ? "no 'format'" : "format = " + format->second,
        kRoutingTraceFormat,
        format != meta.end() && format->second == "pt" ? "; it looks like a model checkpoint" : "");
  auto version = meta.find("format_version");
  if (version == meta.end()) fail("{}: metadata has no format_version", where);
  const int64_t v = parse_int(version->second, where + " format_version");
  if (v < 1 || v > kRoutingTraceVersion)
    fail("{}: format version {} is not one this build reads (1 to {}){}", where, v,
         kRoutingTraceVersion,
         v > kRoutingTraceVersion ? "; it was written by a newer Switchyard" : "");

  // Group the tensors by layer; any other name is an error.
  static const std::regex name_re(R"(layer\.(0|[1-9][0-9]{0,5})\.([a-z_]+))");
  std::map<int, std::map<std::string, const io::TensorInfo*>> by_layer;
  for (const auto& t : file.tensors()) {
    std::smatch m;
    const bool known = std::regex_match(t.name, m, name_re) &&
                       std::find_if(std::begin(kFields), std::end(kFields), [&](const char* f) {
                         return m[2].str() == f;
                       }) != std::end(kFields);
    if (!known)
      fail(
          "{}: unexpected tensor '{}' (a trace holds layer.L.{{scores, router_ids, "
          "router_weights, ids, weights, call_tokens}})",
          where, t.name);
    by_layer[std::stoi(m[1].str())][m[2].str()] = &t;
  }
  if (by_layer.empty()) fail("{}: holds no layers", where);

  RoutingTrace trace;
  trace.metadata = meta;
  RoutingTraceInfo& info = trace.info;
  auto get = [&](const char* key) -> const std::string* {
    auto it = meta.find(key);
    return it == meta.end() ? nullptr : &it->second;
  };
  if (auto* s = get("router")) info.router = parse_router_config_json(*s, where);
  if (auto* s = get("num_layers")) {
    const int64_t n = parse_int(*s, where + " num_layers");
    if (n <= by_layer.rbegin()->first || n > 1'000'000)
      fail("{}: num_layers = {} but layer {} was recorded", where, n, by_layer.rbegin()->first);
    info.num_layers = int(n);
  }
  for (const CapacitySetting& c : capacity_settings())
    if (auto* s = get(c.key)) c.set(info.capacity, *s, where + " " + c.key);
  if (auto* s = get("model")) info.model = *s;
  if (auto* s = get("architecture")) info.architecture = *s;
  if (auto* s = get("placement")) info.placement = *s;
  for (const auto& [key, value] : meta)
    if (!is_reserved(key)) info.extra[key] = value;

  for (const auto& layer_fields : by_layer) {
    const int l = layer_fields.first;  // named copies: lambdas below capture them
    const auto& fields = layer_fields.second;
    auto need = [&](const char* field, const char* dtype, size_t rank) -> const io::TensorInfo& {
      auto it = fields.find(field);
      if (it == fields.end()) fail("{}: layer {} has no tensor 'layer.{}.{}'", where, l, l, field);
      const io::TensorInfo& t = *it->second;
      if (t.dtype_name != dtype)
        fail("{}: tensor '{}' is {}, expected {}", where, t.name, t.dtype_name, dtype);
      if (t.shape.size() != rank)
        fail("{}: tensor '{}' has shape {}, expected {} dimensions", where, t.name, t.shape_str(),
             rank);
      return t;
    };
    const auto& scores = need("scores", "F32", 2);
    const auto& router_ids = need("router_ids", "I32", 2);
    const auto& router_weights = need("router_weights", "F32", 2);
    const auto& ids = need("ids", "I32", 2);
    const auto& weights = need("weights", "F32", 2);
    const auto& calls = need("call_tokens", "I32", 1);
    const int64_t N = scores.shape[0], E = scores.shape[1], K = router_ids.shape[1],
                  S = ids.shape[1];
    auto expect_shape = [&](const io::TensorInfo& t, int64_t cols) {
      if (t.shape[0] != N || t.shape[1] != cols)
        fail(
            "{}: tensor '{}' has shape {} but layer {} has {} tokens, {} experts, top-{}, {} "
            "slots: expected [{}, {}]",
            where, t.name, t.shape_str(), l, N, E, K, S, N, cols);
    };
    if (E < 1 || E > 1'000'000) fail("{}: tensor '{}' has {} experts", where, scores.name, E);
    if (K < 1 || K > E)
      fail("{}: tensor '{}' has top-k {} for {} experts", where, router_ids.name, K, E);
    if (S < K || S > K + E)
      fail("{}: tensor '{}' has {} slots; expected top-k {} to top-k + experts {}", where, ids.name,
           S, K, K + E);
    expect_shape(router_ids, K);
    expect_shape(router_weights, K);
    expect_shape(ids, S);
    expect_shape(weights, S);
    if (info.router.num_experts != 0 && info.router.num_experts != E)
      fail("{}: metadata router has {} experts but layer {} has {}", where, info.router.num_experts,
           l, E);
    if (info.router.top_k != 0 && info.router.top_k != K)
      fail("{}: metadata router has top-k {} but layer {} has {}", where, info.router.top_k, l, K);
    if (E % info.router.sub_experts != 0 || K % info.router.sub_experts != 0)
      fail(
          "{}: metadata router has {} parts per expert, which does not divide layer {}'s {} "
          "experts and top-k {}",
          where, info.router.sub_experts, l, E, K);

    RoutingTraceLayer L;
    L.layer = l;
    L.num_experts = int(E);
    L.top_k = int(K);
    L.slots = int(S);
    L.num_tokens = N;
    L.call_tokens = copy_out<int32_t>(calls);
    int64_t sum = 0;
    for (size_t c = 0; c < L.call_tokens.size(); ++c) {
      if (L.call_tokens[c] < 0)
        fail("{}: {}[{}] = {} is negative", where, calls.name, c, L.call_tokens[c]);
      sum += L.call_tokens[c];
    }
    if (sum != N)
      fail("{}: {} adds up to {} tokens but the layer's tensors hold {}", where, calls.name, sum,
           N);
    L.scores = copy_out<float>(scores);
    L.router_ids = copy_out<int32_t>(router_ids);
    L.router_weights = copy_out<float>(router_weights);
    L.ids = copy_out<int32_t>(ids);
    L.weights = copy_out<float>(weights);
    auto check_ids = [&](const std::vector<int32_t>& v, int64_t cols, const std::string& name) {
      for (size_t i = 0; i < v.size(); ++i)
        if (v[i] < kDroppedExpert || v[i] >= E)
          fail("{}: {}[{}, {}] = {} is neither an expert id below {} nor {} (dropped)", where, name,
               int64_t(i) / cols, int64_t(i) % cols, v[i], E, kDroppedExpert);
    };
    check_ids(L.router_ids, K, router_ids.name);
    check_ids(L.ids, S, ids.name);
    auto check_finite = [&](const std::vector<float>& v, int64_t cols, const std::string& name) {
      for (size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]))
          fail("{}: {}[{}, {}] = {} is not finite", where, name, int64_t(i) / cols,
               int64_t(i) % cols, v[i]);
    };
    check_finite(L.scores, E, scores.name);
    check_finite(L.router_weights, K, router_weights.name);
    check_finite(L.weights, S, weights.name);
    trace.layers.push_back(std::move(L));
  }
  if (info.router.num_experts == 0) info.router.num_experts = trace.layers[0].num_experts;
  if (info.router.top_k == 0) info.router.top_k = trace.layers[0].top_k;
  return trace;
}

}  // namespace sy::moe
