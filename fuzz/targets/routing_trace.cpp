// Target: a routing trace (switchyard score --trace-routing, read by replay): safetensors plus
// the trace's metadata, tensor names, shapes, ids and call counts.
#include <span>

#include "model/model.h"
#include "moe/routing_trace.h"
#include "scratch.h"
#include "target.h"
#include "targets/seeds_common.h"

namespace sy::fuzz {

void run_one(std::string_view bytes) {
  const moe::RoutingTrace trace =
      moe::read_routing_trace(write_scratch("trace.safetensors", bytes));
  volatile int64_t sink = trace.num_layers();
  for (const auto& l : trace.layers) {
    const moe::RoutingTraceLayer* found = trace.find(l.layer);
    sink = sink + found->num_tokens + int64_t(found->ids.size()) + int64_t(l.call_tokens.size());
  }
}

void write_seeds(const std::string& dir) {
  // A real trace: the synthetic checkpoints' forward with the trace writer as observer.
  for (const auto& seed : seed_checkpoints()) {
    const std::string ckpt = write_seed_checkpoint(seed);
    const model::Model m = model::Model::load(ckpt);
    moe::RoutingTraceWriter writer;
    moe::MoeRuntime runtime;
    runtime.observer = &writer;
    model::KvCache cache(m.config(), 16);
    model::Workspace ws;
    std::vector<float> logits(size_t(m.config().vocab_size));
    for (std::vector<int32_t> tokens : {std::vector<int32_t>{1, 5, 9, 2, 7}, {3}, {4}}) {
      const model::SequenceChunk chunk{&cache, tokens};
      m.forward(std::span(&chunk, 1), model::LogitsFor::kLastToken, logits.data(), ws, runtime);
    }
    moe::RoutingTraceInfo info;
    info.model = ckpt;
    info.architecture = seed.name;
    info.num_layers = int(m.config().num_layers);
    info.router = m.config().router;
    const std::string path = scratch_dir() + "/seed-trace.safetensors";
    writer.finish(path, info);
    write_seed(dir, seed.name + ".trace.safetensors", read_file(path));
  }
}

}  // namespace sy::fuzz
