// ScMoE's adaptive operator scheduling (papers.md section 3): a routed branch's experts run at
// one slot among the operators computed while its exchanges are in flight. Slot K (0..n) puts
// them before operator K of the n in the window (K = n: after the last, just before the
// combine). The paper picks K minimising
//     | sum_{i<K} C_i - T_dispatch | + | sum_{i>=K} C_i - T_combine |
// from profiled operator times C_i and exchange times, so that the computation before the
// experts covers the dispatch and the computation after them covers the combine.
#pragma once

#include <span>

namespace sy::model {

// op_seconds: the window's operator times in order. Without an estimate of the exchanges
// (known = false) the middle slot, rounded up.
int choose_expert_slot(std::span<const double> op_seconds, double dispatch_s, double combine_s,
                       bool known);

}  // namespace sy::model
