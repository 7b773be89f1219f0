#include "train/expert_parallel_train.h"

#include <cstring>

#include "util/error.h"

namespace sy::train {

namespace {

moe::Placement rank_placement(int num_experts, int num_ranks) {
  if (num_ranks > num_experts)
    fail(
        "expert parallelism needs at least one expert per rank: {} ranks for {} experts "
        "(use at most {} ranks)",
        num_ranks, num_experts, num_experts);
  return moe::Placement::contiguous(num_experts, num_ranks);
}

}  // namespace

ExpertParallelCompute::ExpertParallelCompute(const parallel::Communicator& comm, int num_experts,
                                             parallel::LinkModel link)
    : comm_(comm), placement_(rank_placement(num_experts, comm.size())), link_(link) {
  const std::vector<int32_t>& mine = placement_.experts_on(comm.rank());
  first_ = mine.front();
  num_mine_ = int(mine.size());
}

void ExpertParallelCompute::exchange(const float* send, const std::vector<int64_t>& send_rows,
                                     std::vector<float>& recv,
                                     const std::vector<int64_t>& recv_rows, int64_t width) {
  xchg_.start(comm_, send, send_rows, recv, recv_rows, width, false, link_);
  xchg_.wait();
}

void ExpertParallelCompute::forward(const moe::MoeBlock& block, int layer,
                                    const std::vector<int64_t>& offsets, const float* xe, int64_t H,
                                    float* ye) {
  const int E = placement_.num_experts(), n = comm_.size();
  if (int(layers_.size()) <= layer) layers_.resize(size_t(layer + 1));
  Layer& L = layers_[size_t(layer)];
  // Rows are grouped by expert and a contiguous placement gives each rank ascending, consecutive
  // experts: peer p's rows are one block.
  std::vector<int64_t> per_expert(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) per_expert[size_t(e)] = offsets[size_t(e + 1)] - offsets[size_t(e)];
  std::vector<int64_t> send_counts(size_t(n) * E);
  for (int q = 0; q < n; ++q)
    std::copy(per_expert.begin(), per_expert.end(), send_counts.begin() + q * E);
  L.recv_counts = parallel::exchange_counts(comm_, send_counts, E);
  L.send_rows.assign(size_t(n), 0);
  L.recv_rows.assign(size_t(n), 0);
  const int e0 = first_, e1 = first_ + num_mine_;
  for (int q = 0; q < n; ++q) {
    for (int32_t e : placement_.experts_on(q)) L.send_rows[size_t(q)] += per_expert[size_t(e)];
    for (int e = e0; e < e1; ++e) L.recv_rows[size_t(q)] += L.recv_counts[size_t(q) * E + e];
  }
  std::vector<float> recv;
  exchange(xe, L.send_rows, recv, L.recv_rows, H);

  // Peer-major (each peer's rows grouped by my experts) -> expert-major.
  const int mine = e1 - e0;
  L.local_offsets.assign(size_t(mine + 1), 0);
  for (int q = 0; q < n; ++q)
    for (int e = e0; e < e1; ++e)
      L.local_offsets[size_t(e - e0 + 1)] += L.recv_counts[size_t(q) * E + e];
  for (int i = 0; i < mine; ++i) L.local_offsets[size_t(i + 1)] += L.local_offsets[size_t(i)];
  const int64_t R = L.local_offsets[size_t(mine)];
  L.perm.resize(size_t(R));
  std::vector<int64_t> fill(L.local_offsets.begin(), L.local_offsets.end() - 1);
  int64_t row = 0;
  for (int q = 0; q < n; ++q)
    for (int e = e0; e < e1; ++e)
      for (int64_t k = 0; k < L.recv_counts[size_t(q) * E + e]; ++k)
        L.perm[size_t(row++)] = fill[size_t(e - e0)]++;
  L.xloc.resize(size_t(R * H));
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(L.xloc.data() + L.perm[size_t(i)] * H, recv.data() + i * H, size_t(H) * 4);

  std::vector<float> yloc(size_t(R * H)), yback(size_t(R * H));
  L.act.resize(size_t(mine));
  for (int i = 0; i < mine; ++i) {
    const int64_t r0 = L.local_offsets[size_t(i)], m = L.local_offsets[size_t(i + 1)] - r0;
    if (m == 0) continue;
    L.act[size_t(i)].keep = true;
    moe::ffn_forward(block.experts[size_t(e0 + i)], L.xloc.data() + r0 * H, m, yloc.data() + r0 * H,
                     L.act[size_t(i)]);
  }
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(yback.data() + i * H, yloc.data() + L.perm[size_t(i)] * H, size_t(H) * 4);
  std::vector<float> out;
  exchange(yback.data(), L.recv_rows, out, L.send_rows, H);
  if (!out.empty()) std::memcpy(ye, out.data(), out.size() * 4);
}

void ExpertParallelCompute::backward(const MoeParams& p, int layer,
                                     const std::vector<int64_t>& offsets, const float* dye,
                                     int64_t H, float* dxe) {
  Layer& L = layers_.at(size_t(layer));
  const int e0 = first_, mine = num_mine_;
  std::vector<float> recv;
  exchange(dye, L.send_rows, recv, L.recv_rows, H);
  const int64_t R = L.local_offsets[size_t(mine)];
  std::vector<float> dyloc(size_t(R * H)), dxloc(size_t(R * H)), back(size_t(R * H));
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(dyloc.data() + L.perm[size_t(i)] * H, recv.data() + i * H, size_t(H) * 4);
  for (int i = 0; i < mine; ++i) {
    const int64_t r0 = L.local_offsets[size_t(i)], m = L.local_offsets[size_t(i + 1)] - r0;
    if (m > 0)
      ffn_train_backward(p.experts[size_t(e0 + i)], L.xloc.data() + r0 * H, m, L.act[size_t(i)],
                         dyloc.data() + r0 * H, dxloc.data() + r0 * H, false, scratch_);
  }
  for (int64_t i = 0; i < R; ++i)
    std::memcpy(back.data() + i * H, dxloc.data() + L.perm[size_t(i)] * H, size_t(H) * 4);
  std::vector<float> out;
  exchange(back.data(), L.recv_rows, out, L.send_rows, H);
  (void)offsets;
  if (!out.empty()) std::memcpy(dxe, out.data(), out.size() * 4);
}

}  // namespace sy::train
