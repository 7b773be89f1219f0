// The KV cache takes memory as the sequence grows, never up front, and refuses contexts past
// the model's max_position_embeddings or the memory available.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <functional>

#include "model/kv_cache.h"
#include "util/error.h"
#include "util/memory.h"

namespace sy::model {
namespace {

ModelConfig config(int64_t max_positions) {
  ModelConfig c;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = max_positions;
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(KvCache, LargeCapacityCostsNothingUntilUsed) {
  // 2^20 positions x 3 layers x 16 floats x 2 = 384 MiB if taken up front.
  KvCache cache(config(int64_t(1) << 20), int64_t(1) << 20);
  ::setenv("SY_MEMORY_LIMIT_MB", "1", 1);  // the first rows fit in 1 MiB
  cache.reserve_more(5);
  cache.advance(5);
  cache.reserve_more(100);  // doubling: 105 rows, still far below 1 MiB
  cache.advance(100);
  EXPECT_EQ(cache.size(), 105);
  // Growing to 100k rows (~37 MiB) is refused with what and how much.
  const std::string msg = error_of([&] { cache.reserve_more(100000); });
  ::unsetenv("SY_MEMORY_LIMIT_MB");
  EXPECT_NE(msg.find("KV cache for 100105 positions"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MiB of memory is available"), std::string::npos) << msg;
  EXPECT_EQ(cache.size(), 105);  // unchanged by the refusal
}

TEST(KvCache, KeepsValuesWhileGrowing) {
  KvCache cache(config(4096), 4096);
  cache.reserve_more(3);
  for (int l = 0; l < 3; ++l)
    for (int i = 0; i < 3 * 16; ++i) cache.keys(l)[i] = float(l * 1000 + i);
  cache.advance(3);
  cache.reserve_more(1000);  // reallocates
  for (int l = 0; l < 3; ++l)
    for (int i = 0; i < 3 * 16; ++i) ASSERT_EQ(cache.keys(l)[i], float(l * 1000 + i));
}

TEST(KvCache, RefusesContextsPastTheModel) {
  const std::string msg = error_of([] { KvCache cache(config(4096), 4097); });
  EXPECT_NE(msg.find("4097 positions"), std::string::npos) << msg;
  EXPECT_NE(msg.find("max_position_embeddings"), std::string::npos) << msg;
  KvCache cache(config(4096), 8);
  cache.reserve_more(8);
  cache.advance(8);
  const std::string full = error_of([&] { cache.reserve_more(1); });
  EXPECT_NE(full.find("context full"), std::string::npos) << full;
}

TEST(Memory, FormatsAndChecks) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(uint64_t(40) << 30), "40.0 GiB");
  EXPECT_EQ(checked_mul(uint64_t(1) << 31, uint64_t(1) << 31, "x"), uint64_t(1) << 62);
  EXPECT_NE(error_of([] {
              checked_mul(uint64_t(1) << 40, uint64_t(1) << 40, "tensor t");
            }).find("tensor t: size overflows 64 bits"),
            std::string::npos);
  EXPECT_GT(available_memory_bytes(), uint64_t(1) << 20);  // this machine has memory
  ::setenv("SY_MEMORY_LIMIT_MB", "10", 1);
  EXPECT_LE(available_memory_bytes(), uint64_t(10) << 20);
  const std::string msg = error_of([] { require_memory(uint64_t(20) << 20, "the logits"); });
  ::unsetenv("SY_MEMORY_LIMIT_MB");
  EXPECT_NE(msg.find("the logits needs 20.0 MiB but only"), std::string::npos) << msg;
}

}  // namespace
}  // namespace sy::model
