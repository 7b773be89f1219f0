// Expert parallelism checks, run under mpirun with 2 and 4 ranks (tests/CMakeLists.txt):
//  1. dispatch then combine is the identity on self-describing rows (each row names its source
//     rank and token, so a misrouted row says where it came from), for uneven placements, a
//     rank with zero tokens, and a layer where every token goes to one rank;
//  2. a model's logits with experts spread over the ranks equal the single-process logits of
//     the same sequences, for every capacity policy (prefill and a decode step); with overlap
//     (non-blocking exchanges, a progress thread, an emulated link, any expert slot) they are
//     bit-identical to the blocking exchange's: overlap changes when, never what, is computed;
//  3. each rank holds only its share of the expert weights (the loader's accounting).
// Placements with replicated experts (EPLB-style) take part in 1-3: each row reaches exactly
// one host, a host keeps its own rows, and the logits still equal one process's.
// Usage: mpirun -np N ep_test MODEL_DIR [MODEL_DIR...] (e.g. an ScMoE model: its routed branches
// are in flight across several operators and, with an MoE block in every layer, two at once).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "model/model.h"
#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"
#include "util/error.h"

using namespace sy;

namespace {

int g_failures = 0;
const parallel::Communicator* g_comm = nullptr;

#define CHECK_MSG(cond, ...)                                                                    \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      if (++g_failures <= 12)                                                                   \
        fmt::print(stderr, "rank {}: FAILED {} ({}:{}): {}\n", g_comm->rank(), #cond, __FILE__, \
                   __LINE__, fmt::format(__VA_ARGS__));                                         \
    }                                                                                           \
  } while (0)

// --- 1. exchange identity ----------------------------------------------------------------

constexpr int64_t kWidth = 6;  // [source rank, token, expert-independent payload x4]

// Deterministic routing every rank can recompute: token t of rank r, slot s.
int32_t route_of(int scenario, int rank, int64_t t, int s, int E, const moe::Placement& pl) {
  switch (scenario) {
    case 0:
      return int32_t((rank * 7 + t * 3 + s * 5) % E);  // spread
    case 1:
      return pl.experts_on(
          pl.num_devices() -
          1)[size_t(s) % pl.experts_on(pl.num_devices() - 1).size()];  // all to the last rank
    default:
      return s == 0 ? int32_t((t + rank) % E) : moe::kDroppedExpert;  // one slot dropped
  }
}

struct IdentityContext {
  int rank = 0;
  int scenario = 0;
  int E = 0;
  int slots = 0;
  const moe::Placement* placement = nullptr;
  int64_t rows_seen = 0;
};

// The owner checks every row it receives really chose this expert, then returns
// row + 1000 * (expert + 1) so the sender can check which expert answered.
void identity_compute(int expert, const float* rows, int64_t n, int64_t H, float* out, void* ctx_) {
  auto& ctx = *static_cast<IdentityContext*>(ctx_);
  const auto& hosts = ctx.placement->hosts_of(expert);
  CHECK_MSG(std::find(hosts.begin(), hosts.end(), ctx.rank) != hosts.end(),
            "rank {} got rows of expert {} it does not host", ctx.rank, expert);
  for (int64_t i = 0; i < n; ++i) {
    const float* r = rows + i * H;
    const int src = int(r[0]);
    const int64_t t = int64_t(r[1]);
    bool chose = false;
    for (int s = 0; s < ctx.slots; ++s)
      chose |= route_of(ctx.scenario, src, t, s, ctx.E, *ctx.placement) == expert;
    CHECK_MSG(chose, "row from rank {} token {} arrived at expert {} it did not choose", src, t,
              expert);
    // A replicated expert's row goes to the host the split rule names for it.
    if (hosts.size() > 1 && std::find(hosts.begin(), hosts.end(), src) != hosts.end())
      CHECK_MSG(src == ctx.rank, "rank {} ran a row of expert {} that host rank {} should keep",
                ctx.rank, expert, src);
    CHECK_MSG(r[2] == float(src * 100 + t) && r[5] == float(t % 7),
              "row from rank {} token {} is corrupt", src, t);
    for (int64_t h = 0; h < H; ++h) out[i * H + h] = r[h] + 1000.0f * float(expert + 1);
    ++ctx.rows_seen;
  }
}

void check_exchange(const parallel::Communicator& comm, const moe::Placement& pl, int scenario,
                    int64_t num_tokens, const char* what) {
  const int E = pl.num_experts(), slots = 2;
  parallel::ExpertParallelBackend ep(comm, pl, 1);
  IdentityContext ctx{comm.rank(), scenario, E, slots, &pl};
  ep.set_compute_for_tests(identity_compute, &ctx);
  std::vector<float> x(size_t(num_tokens * kWidth)), out(x.size(), 0.0f);
  std::vector<int32_t> ids(size_t(num_tokens * slots));
  std::vector<float> w(ids.size());
  for (int64_t t = 0; t < num_tokens; ++t) {
    float* r = x.data() + t * kWidth;
    r[0] = float(comm.rank()), r[1] = float(t), r[2] = float(comm.rank() * 100 + t);
    r[3] = 0.5f, r[4] = -2.0f, r[5] = float(t % 7);
    for (int s = 0; s < slots; ++s) {
      ids[size_t(t * slots + s)] = route_of(scenario, comm.rank(), t, s, E, pl);
      w[size_t(t * slots + s)] = s == 0 ? 1.0f : 0.25f;
    }
    if (ids[size_t(t * slots)] == ids[size_t(t * slots + 1)])
      ids[size_t(t * slots + 1)] = moe::kDroppedExpert;
  }
  moe::MoeBlock block;
  moe::MoeScratch scratch;
  ep.run(block, {0, num_tokens, kWidth, slots, x.data(), ids.data(), w.data()}, scratch,
         out.data());
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t h = 0; h < kWidth; ++h) {
      double want = 0;
      for (int s = 0; s < slots; ++s) {
        const int32_t e = ids[size_t(t * slots + s)];
        if (e == moe::kDroppedExpert) continue;
        want += double(w[size_t(t * slots + s)]) * (x[size_t(t * kWidth + h)] + 1000.0 * (e + 1));
      }
      CHECK_MSG(std::abs(out[size_t(t * kWidth + h)] - want) <= 1e-3,
                "{}: token {} column {}: got {}, want {}", what, t, h, out[size_t(t * kWidth + h)],
                want);
    }
  }
}

// --- 2. model equivalence -------------------------------------------------------------

struct Sequences {
  std::vector<std::vector<int32_t>> tokens;
};

Sequences my_sequences(int rank, int size, int64_t vocab) {
  Sequences s;
  if (size > 2 && rank == size - 1) return s;  // a rank with no tokens at all
  std::mt19937 rng(uint32_t(1000 + rank));
  std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
  for (int64_t len : {int64_t(5 + 3 * rank), int64_t(11)}) {
    s.tokens.emplace_back();
    for (int64_t i = 0; i < len; ++i) s.tokens.back().push_back(tok(rng));
  }
  return s;
}

// Prefill logits of every token, then one decode step per sequence.
std::vector<float> run_model(const model::Model& m, const Sequences& seqs,
                             const moe::MoeRuntime& rt) {
  const int64_t V = m.config().vocab_size;
  std::vector<model::KvCache> caches;
  for (size_t i = 0; i < seqs.tokens.size(); ++i) caches.emplace_back(m.config(), 64);
  std::vector<model::SequenceChunk> chunks;
  int64_t T = 0;
  for (size_t i = 0; i < seqs.tokens.size(); ++i) {
    chunks.push_back({&caches[i], seqs.tokens[i]});
    T += int64_t(seqs.tokens[i].size());
  }
  model::Workspace ws;
  std::vector<float> logits(size_t((T + int64_t(chunks.size())) * V));
  m.forward(chunks, model::LogitsFor::kAllTokens, logits.data(), ws, rt);
  std::vector<int32_t> next;
  for (size_t i = 0; i < chunks.size(); ++i) next.push_back(int32_t((i * 31 + 7) % size_t(V)));
  std::vector<model::SequenceChunk> step;
  for (size_t i = 0; i < chunks.size(); ++i) step.push_back({&caches[i], {&next[i], 1}});
  m.forward(step, model::LogitsFor::kAllTokens, logits.data() + T * V, ws, rt);
  return logits;
}

void check_model(const parallel::Communicator& comm, const std::string& dir,
                 const moe::Placement& pl, const char* what) {
  const model::ModelConfig cfg = model::load_config(dir);
  const int E = cfg.router.num_experts;
  model::ExpertMask mine(size_t(E), false);
  for (int32_t e : pl.hosted_on(comm.rank())) mine[size_t(e)] = true;
  const model::Model sharded = model::Model::load(dir, mine);
  const model::Model full = model::Model::load(dir);

  // 3. The loader holds views of exactly this rank's experts.
  const auto& w = sharded.weights();
  const size_t per_expert = w.expert_bytes_total / size_t(E);
  const size_t hosted = pl.hosted_on(comm.rank()).size();
  CHECK_MSG(w.expert_bytes_held == per_expert * hosted,
            "{}: rank holds {} expert bytes, expected {} ({} experts)", what, w.expert_bytes_held,
            per_expert * hosted, hosted);
  for (size_t l = 0; l < w.layers.size(); ++l)
    if (w.layers[l].is_moe)
      for (int e = 0; e < E; ++e)
        CHECK_MSG(
            (w.layers[l].moe.experts[size_t(e)].gate.data != nullptr) == bool(mine[size_t(e)]),
            "{}: layer {} expert {} view presence does not match ownership", what, l, e);

  const Sequences seqs = my_sequences(comm.rank(), comm.size(), cfg.vocab_size);
  // Blocking exchanges; overlap (non-blocking, progress thread); overlap under an emulated link
  // slow enough that the exchanges are still in flight while other operators compute.
  parallel::EpOptions fast, slow;
  fast.overlap = slow.overlap = true;
  slow.link = parallel::LinkModel{2.0, 300.0};
  parallel::ExpertParallelBackend ep(comm, pl, int(cfg.num_layers));
  parallel::ExpertParallelBackend ep_fast(comm, pl, int(cfg.num_layers), fast);
  parallel::ExpertParallelBackend ep_slow(comm, pl, int(cfg.num_layers), slow);
  int index = 0;
  for (const char* policy :
       {"none", "score", "order", "reverse", "random", "expanded", "reroute", "device"}) {
    ++index;
    // Replicas: the policies that count each expert on one device are refused (engine.cpp).
    const std::string name = policy;
    if (pl.replicated() && (name == "expanded" || name == "device")) continue;
    moe::MoeRuntime rt;
    rt.capacity.policy = moe::parse_capacity_policy(policy);
    rt.capacity.factor = 1.0;
    rt.placement = pl;
    rt.source_device = comm.rank();
    const std::vector<float> ref = run_model(full, seqs, rt);  // every expert in this process
    rt.backend = &ep;
    rt.forward_calls = 0;  // the same calls again: random drops draw the same
    const std::vector<float> got = run_model(sharded, seqs, rt);
    // Overlap changes when, never what, is computed: bit-identical logits, with the experts at
    // the adaptive slot, the earliest or the latest (in turn over the policies).
    parallel::ExpertParallelBackend& epo = index % 2 == 1 ? ep_slow : ep_fast;
    for (int slot : {index % 3 == 0 ? -1 : index % 3 == 1 ? 0 : 99}) {
      epo.reset_timings();
      moe::MoeRuntime rto = rt;
      rto.backend = &epo;
      rto.expert_slot = slot;
      rto.forward_calls = 0;
      const std::vector<float> same = run_model(sharded, seqs, rto);
      size_t differ = 0;
      for (size_t i = 0; i < got.size() && i < same.size(); ++i)
        differ += std::memcmp(&got[i], &same[i], 4) != 0;
      CHECK_MSG(differ == 0 && same.size() == got.size(),
                "{} policy {}: overlap (slot {}, {}) changed {} of {} logits", what, policy, slot,
                epo.options().link.describe(), differ, got.size());
      double comm_s = 0, exposed = 0;
      for (const auto& t : epo.timings()) comm_s += t.comm_s, exposed += t.exposed_s();
      CHECK_MSG(comm_s > 0 && exposed <= comm_s + 1e-3,
                "{} policy {}: communication {} s, exposed {} s", what, policy, comm_s, exposed);
    }
    double scale = 1, worst = 0;
    size_t worst_i = 0;
    for (float v : ref) scale = std::max(scale, double(std::abs(v)));
    for (size_t i = 0; i < ref.size(); ++i)
      if (std::abs(double(got[i]) - ref[i]) > worst)
        worst = std::abs(double(got[i]) - ref[i]), worst_i = i;
    // Both paths compute in float32 and differ only in how many rows one expert matmul sees.
    const double tol = 1e-5 * scale;
    CHECK_MSG(
        worst <= tol,
        "{} policy {}: worst logit {} (row {}, col {}): EP {} vs single-process {}, tolerance {}",
        what, policy, worst_i, worst_i / size_t(cfg.vocab_size), worst_i % size_t(cfg.vocab_size),
        got.empty() ? 0.f : got[worst_i], ref.empty() ? 0.f : ref[worst_i], tol);
  }
}

}  // namespace

int main(int argc, char** argv) {
  parallel::Communicator& comm = parallel::Communicator::world(&argc, &argv);
  g_comm = &comm;
  if (argc < 2) {
    fmt::print(stderr, "usage: mpirun -np N ep_test MODEL_DIR [MODEL_DIR...]\n");
    return 2;
  }
  try {
    const int D = comm.size();
    // Exchange identity on a 7-expert placement (uneven when D does not divide 7).
    const moe::Placement even = moe::Placement::contiguous(7, D);
    std::vector<int32_t> scattered(7);
    for (int e = 0; e < 7; ++e) scattered[size_t(e)] = (e * 3 + 1) % D;  // non-contiguous
    const moe::Placement odd = moe::Placement::from_map(scattered, D);
    // EPLB-style replicas: rank 0's first expert also on the last rank, and (4 ranks) expert 6
    // on every rank but its owner.
    moe::Placement replicated = even;
    if (D > 1) replicated.add_replica(0, D - 1);
    if (D > 2)
      for (int d = 0; d < D; ++d)
        if (d != replicated.device_of(6)) replicated.add_replica(6, d);
    for (const moe::Placement* pl :
         {&even, &odd, static_cast<const moe::Placement*>(&replicated)}) {
      check_exchange(comm, *pl, 0, 13 + comm.rank() * 5, "spread routing");
      check_exchange(comm, *pl, 0, comm.rank() == 0 ? 0 : 9, "rank 0 without tokens");
      check_exchange(comm, *pl, 1, 11, "every token to the last rank");
      check_exchange(comm, *pl, 2, 17, "second slot dropped");
    }
    // Each model: contiguous placement and an uneven, non-contiguous one.
    for (int i = 1; i < argc; ++i) {
      const std::string dir = argv[i];
      const int E = model::load_config(dir).router.num_experts;
      check_model(comm, dir, moe::Placement::contiguous(E, D),
                  fmt::format("{}: contiguous placement", dir).c_str());
      std::vector<int32_t> uneven(static_cast<size_t>(E));
      for (int e = 0; e < E; ++e)
        uneven[size_t(e)] = e < E - (D - 1) ? 0 : e - (E - D);  // rank 0 holds most
      moe::Placement skewed = moe::Placement::from_map(uneven, D);
      check_model(comm, dir, skewed, fmt::format("{}: uneven placement", dir).c_str());
      if (D > 1) {  // EPLB-style: two of rank 0's experts replicated on the other ranks
        for (const auto& [e, d] : {std::pair{0, D - 1}, std::pair{1, 1}}) {
          const auto& hosts = skewed.hosts_of(e);
          if (std::find(hosts.begin(), hosts.end(), d) == hosts.end()) skewed.add_replica(e, d);
        }
        check_model(comm, dir, skewed, fmt::format("{}: replicated experts", dir).c_str());
      }
    }
  } catch (const std::exception& e) {
    comm.abort(e.what());
  }
  std::vector<int64_t> failures{g_failures};
  comm.all_reduce_sum(failures);
  if (comm.is_root())
    fmt::print("{} ranks: {}\n", comm.size(),
               failures[0] == 0 ? "all expert-parallel checks passed"
                                : fmt::format("{} checks FAILED", failures[0]));
  return failures[0] == 0 ? 0 : 1;
}
