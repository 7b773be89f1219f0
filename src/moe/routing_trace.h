// Routing traces: every MoE layer call's router scores, the router's top-k and the final
// (token, expert) pairs after the capacity policy, saved as one safetensors file so that a
// policy or a placement can be studied later without the model (switchyard replay, sim/).
//
// File layout (format "switchyard-routing-trace", version 1), per recorded layer l:
//   layer.{l}.scores          [N, E] F32  router probabilities
//   layer.{l}.router_ids      [N, k] I32  the router's choice (kDroppedExpert = -1 allowed)
//   layer.{l}.router_weights  [N, k] F32
//   layer.{l}.ids             [N, S] I32  after the policy; S = most slots seen, padded with -1
//   layer.{l}.weights         [N, S] F32  padded with 0
//   layer.{l}.call_tokens     [num_calls] I32  tokens of each forward call, in order (sum = N)
// N = tokens over all calls of that layer. Metadata: format, format_version, num_layers,
// router (JSON of RouterConfig), capacity (description), capacity_policy, capacity_factor,
// model, architecture, placement, plus free-form keys given by the caller.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "moe/capacity.h"
#include "moe/router.h"
#include "moe/routing_observer.h"

namespace sy::moe {

inline constexpr const char* kRoutingTraceFormat = "switchyard-routing-trace";
inline constexpr int kRoutingTraceVersion = 1;

// All calls of one MoE layer, concatenated over tokens.
struct RoutingTraceLayer {
  int layer = 0;
  int num_experts = 0;
  int top_k = 0;
  int slots = 0;                      // S
  int64_t num_tokens = 0;             // N
  std::vector<float> scores;          // [N, E]
  std::vector<int32_t> router_ids;    // [N, k]
  std::vector<float> router_weights;  // [N, k]
  std::vector<int32_t> ids;           // [N, S]
  std::vector<float> weights;         // [N, S]
  std::vector<int32_t> call_tokens;   // [num_calls]
};

// What the run that wrote the trace was: enough to re-apply a policy (router) and to say
// where the trace came from.
struct RoutingTraceInfo {
  std::string model;                         // model directory
  std::string architecture;                  // e.g. "Qwen3MoeForCausalLM"
  int num_layers = 0;                        // layers of the model (MoE or not); 0 = unknown
  RouterConfig router;                       // num_experts / top_k 0 = take them from the tensors
  CapacityConfig capacity;                   // the policy active while recording
  std::string placement;                     // Placement::describe(), empty = one device
  std::map<std::string, std::string> extra;  // more metadata (string values)
};

struct RoutingTrace {
  RoutingTraceInfo info;
  std::map<std::string, std::string> metadata;  // every metadata key as written
  std::vector<RoutingTraceLayer> layers;        // ascending layer index, recorded layers only

  const RoutingTraceLayer* find(int layer) const;  // nullptr when not recorded
  int num_layers() const;  // info.num_layers, or the highest recorded layer + 1
};

// Records every observed call in memory (4 * (E + 2k + 2S) bytes per token per layer:
// 4096 tokens x 64 experts x 24 layers, top-8 ~ 38 MB; finish() briefly holds a second copy
// as the file image) and writes the trace once at the end.
// observe() may be called from several threads; calls of one layer must arrive in order.
class RoutingTraceWriter : public RoutingObserver {
 public:
  void observe(const RoutingRecord& record) override;

  // Writes the trace atomically; throws sy::Error when nothing was recorded or the file
  // cannot be written. The recording stays in memory (finish may be called again).
  void finish(const std::string& path, const RoutingTraceInfo& info) const;

  int64_t num_calls() const;
  const std::map<int, RoutingTraceLayer>& layers() const { return layers_; }

 private:
  mutable std::mutex mutex_;
  std::map<int, RoutingTraceLayer> layers_;
};

// Reads and validates a trace written by RoutingTraceWriter. Throws sy::Error naming the file
// and the problem: not a trace (e.g. a model checkpoint), newer format version, a missing or
// unexpected tensor, wrong dtype, inconsistent shapes, call tokens that do not add up, or
// expert ids out of range.
RoutingTrace read_routing_trace(const std::string& path);

}  // namespace sy::moe
