// Drives Switchyard's trainer on the inputs of tests/reference/train_reference.py and writes
// the same outputs (logits.npy, loss.json, grads.safetensors, trace.json,
// final_weights.safetensors), for test_train_vs_torch.sh to compare.
//   sy_train_twin --model DIR --tokens TOKENS.npy --out DIR [--steps 10 --lr 3e-3 --warmup 3
//     --min-lr-ratio 0.1 --weight-decay 0.1 --beta1 0.9 --beta2 0.95 --eps 1e-8 --clip 1.0
//     --aux-coef 0.01 --z-coef 0.001 --capacity-factor 0]
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"
#include "train/params.h"
#include "train/train_model.h"
#include "util/error.h"

using namespace sy;

namespace {

// Integer .npy [B, S] (int32 or int64, little-endian, C order).
std::vector<int32_t> read_tokens(const std::string& path, int64_t& B, int64_t& S) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open {}", path);
  char magic[8];
  f.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) fail("{}: not a .npy file", path);
  uint16_t hlen = 0;
  f.read(reinterpret_cast<char*>(&hlen), 2);
  std::string header(hlen, '\0');
  f.read(header.data(), hlen);
  const bool i8 = header.find("'<i8'") != std::string::npos;
  const bool i4 = header.find("'<i4'") != std::string::npos;
  if (!i8 && !i4) fail("{}: expected int32 or int64 tokens, header {}", path, header);
  if (header.find("'fortran_order': False") == std::string::npos) fail("{}: not C order", path);
  const size_t a = header.find("'shape': (");
  if (a == std::string::npos) fail("{}: no shape", path);
  if (std::sscanf(header.c_str() + a + 10, "%ld, %ld", &B, &S) != 2) fail("{}: expected 2-D", path);
  std::vector<int32_t> out(size_t(B * S));
  for (auto& t : out) {
    int64_t v = 0;
    f.read(reinterpret_cast<char*>(&v), i8 ? 8 : 4);
    t = int32_t(v);
  }
  if (!f) fail("{}: truncated", path);
  return out;
}

void write_params(const std::string& path, const train::ParamSet& ps, bool grads) {
  std::vector<io::TensorToWrite> out;
  for (const train::Param& p : ps.all()) {
    const std::vector<float>& v = grads ? p.grad : p.value;
    out.push_back({p.name, "F32", p.shape, v.data(), v.size() * 4});
  }
  io::write_safetensors(path, out);
}

nlohmann::json loss_json(const train::LossParts& l) {
  return {{"total", l.total}, {"ce", l.ce}, {"aux", l.aux}, {"z", l.z}};
}

}  // namespace

int main(int argc, char** argv) try {
  std::map<std::string, std::string> a{
      {"--steps", "10"},         {"--lr", "3e-3"},          {"--warmup", "3"},
      {"--min-lr-ratio", "0.1"}, {"--weight-decay", "0.1"}, {"--beta1", "0.9"},
      {"--beta2", "0.95"},       {"--eps", "1e-8"},         {"--clip", "1.0"},
      {"--aux-coef", "0.01"},    {"--z-coef", "0.001"},     {"--capacity-factor", "0"}};
  for (int i = 1; i + 1 < argc; i += 2) a[argv[i]] = argv[i + 1];
  for (const char* k : {"--model", "--tokens", "--out"})
    if (!a.count(k)) fail("missing {}", k);
  const std::string out = a["--out"];
  std::filesystem::create_directories(out);
  const model::ModelConfig config = model::load_config(a["--model"]);
  train::ParamSet params = train::load_params(a["--model"]);
  train::TrainModel model(config, params);
  int64_t B = 0, S = 0;
  const std::vector<int32_t> tokens = read_tokens(a["--tokens"], B, S);
  train::LossOptions lo;
  lo.aux_coef = std::stof(a["--aux-coef"]);
  lo.z_coef = std::stof(a["--z-coef"]);
  lo.capacity_factor = std::stod(a["--capacity-factor"]);

  params.zero_grads();
  std::vector<float> logits;
  const train::LossParts l0 = model.forward_backward(tokens.data(), nullptr, B, S, lo, &logits);
  io::write_npy_f32(out + "/logits.npy", logits.data(), {B, S, config.vocab_size});
  nlohmann::json per_layer = nlohmann::json::array();
  for (int l = 0; l < int(config.num_layers); ++l) {
    const train::MoeActivations& m = model.layer_activations(l).moe_act;
    if (m.counts.empty()) continue;
    per_layer.push_back({{"layer", l},
                         {"aux", m.aux},
                         {"z", m.z},
                         {"expert_counts", m.counts},
                         {"kept_counts", m.kept},
                         {"dropped_pairs", m.dropped}});
  }
  nlohmann::json lj = loss_json(l0);
  lj["per_layer"] = per_layer;
  io::write_text_file_atomic(out + "/loss.json", lj.dump(1));
  write_params(out + "/grads.safetensors", params, true);

  // Optimizer steps on the same batch.
  const int steps = std::stoi(a["--steps"]);
  const train::LrSchedule sched{std::stod(a["--lr"]), std::stoi(a["--warmup"]), steps,
                                std::stod(a["--min-lr-ratio"])};
  train::AdamWConfig ac;
  ac.beta1 = std::stod(a["--beta1"]);
  ac.beta2 = std::stod(a["--beta2"]);
  ac.eps = std::stod(a["--eps"]);
  ac.weight_decay = std::stod(a["--weight-decay"]);
  train::AdamW opt(ac);
  nlohmann::json trace = nlohmann::json::array();
  for (int s = 1; s <= steps; ++s) {
    params.zero_grads();
    const train::LossParts l = model.forward_backward(tokens.data(), nullptr, B, S, lo);
    const double norm = train::clip_grad_norm(params, std::stod(a["--clip"]));
    const double lr = train::lr_at(sched, s);
    opt.step(params, lr);
    trace.push_back({{"step", s},
                     {"lr", lr},
                     {"loss_before_update", loss_json(l)},
                     {"grad_norm_before_clip", norm}});
  }
  const train::LossParts lf = model.evaluate(tokens.data(), nullptr, B, S, lo);
  io::write_text_file_atomic(
      out + "/trace.json", nlohmann::json{{"steps", trace}, {"final_loss", loss_json(lf)}}.dump(1));
  model.sync_tied_head();
  write_params(out + "/final_weights.safetensors", params, false);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "sy_train_twin: error: %s\n", e.what());
  return 1;
}
