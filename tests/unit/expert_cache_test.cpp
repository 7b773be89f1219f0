// ExpertCache (moe/expert_cache.h) on a file of known bytes: every acquired expert holds
// exactly its bytes of the file whatever the budget, order and read-ahead; the budget is never
// exceeded (checked through the bytes read: a cache that holds everything reads each expert
// once, one that holds a single expert rereads); a file truncated under the cache is a clear
// error, also when the I/O thread meets it first.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "expect_error.h"
#include "moe/expert_cache.h"
#include "temp_dir.h"

namespace sy::moe {
namespace {

constexpr int kLayers = 3, kExperts = 4;
constexpr int64_t kRows = 8, kCols = 16;  // F32 matrices of 512 bytes; an expert is 1536 bytes

struct Fixture {
  sy::testing::TempDir dir;
  std::string path = dir.path() + "/experts.bin";
  std::vector<float> values;
  std::vector<std::vector<OffloadedExpert>> experts;

  Fixture() {
    const size_t per_matrix = size_t(kRows * kCols);
    values.resize(size_t(kLayers * kExperts * 3) * per_matrix + 7);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    for (float& v : values) v = u(rng);
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * 4));
    // Matrices laid out from byte 28 on (not block-aligned, as in safetensors), reversed
    // expert order so offsets do not follow ids.
    experts.assign(kLayers, std::vector<OffloadedExpert>(kExperts));
    uint64_t offset = 28;
    for (int l = 0; l < kLayers; ++l)
      for (int e = kExperts - 1; e >= 0; --e)
        for (OffloadedMatrix* m : {&experts[l][e].gate, &experts[l][e].up, &experts[l][e].down}) {
          m->shape = ops::WeightView{DType::F32, kRows, kCols, nullptr};
          m->file = path;
          m->offset = offset;
          offset += per_matrix * 4;
        }
  }
  void expect_bytes(const FfnWeights& w, int l, int e) const {
    const OffloadedExpert& x = experts[size_t(l)][size_t(e)];
    for (auto [view, src] : {std::pair{&w.gate, &x.gate}, {&w.up, &x.up}, {&w.down, &x.down}}) {
      ASSERT_EQ(view->rows, kRows);
      const auto* want = reinterpret_cast<const uint8_t*>(values.data()) + src->offset;
      EXPECT_EQ(std::memcmp(view->data, want, view->bytes()), 0)
          << "layer " << l << " expert " << e;
    }
  }
};

const size_t kExpertBytes = size_t(3 * kRows * kCols * 4);

TEST(ExpertCache, EveryBudgetAndOrderGivesTheFilesBytes) {
  Fixture f;
  for (size_t budget_experts : {size_t(1), size_t(2), size_t(kLayers * kExperts)}) {
    for (bool ahead : {false, true}) {
      ExpertCache cache(f.experts, {budget_experts * kExpertBytes, 0, ahead});
      for (int pass = 0; pass < 2; ++pass)
        for (int l = 0; l < kLayers; ++l) {
          const std::vector<int> needed = {3, 0, 2};
          cache.begin_layer(l, needed);
          for (int e : needed) {
            f.expect_bytes(cache.acquire(l, e), l, e);
            cache.release(l, e);
          }
        }
      const OffloadStats s = cache.stats();
      EXPECT_EQ(s.requests, 2 * kLayers * 3);
      EXPECT_EQ(s.bytes_read % kExpertBytes, 0u);
      if (budget_experts == size_t(kLayers * kExperts) && !ahead) {
        // Holds everything: the second pass hits, nothing is read twice.
        EXPECT_EQ(s.hits, kLayers * 3);
        EXPECT_EQ(s.bytes_read, size_t(kLayers * 3) * kExpertBytes);
      }
      if (budget_experts == 1 && !ahead) {
        EXPECT_EQ(s.hits, 0);  // one slot, three experts per layer in turn: every use rereads
        EXPECT_EQ(s.bytes_read, size_t(2 * kLayers * 3) * kExpertBytes);
      }
    }
  }
}

TEST(ExpertCache, BudgetBelowOneExpertAndTruncatedFilesAreClearErrors) {
  Fixture f;
  sy::testing::expect_error(
      [&] {
        ExpertCache c(f.experts, {kExpertBytes - 1, 0, true});
      },
      {"cannot hold one expert"});
  ExpertCache cache(f.experts, {2 * kExpertBytes, 0, false});
  std::filesystem::resize_file(f.path, 2000);
  cache.begin_layer(2, std::vector<int>{1});
  sy::testing::expect_error([&] { (void)cache.acquire(2, 1); },
                            {f.path, "truncated or replaced after the model was loaded"});
  ExpertCache ahead(f.experts, {2 * kExpertBytes, 0, true});  // the I/O thread fails first
  ahead.begin_layer(1, std::vector<int>{0, 1, 2, 3});
  sy::testing::expect_error([&] { (void)ahead.acquire(1, 3); }, {"truncated"});
}

}  // namespace
}  // namespace sy::moe
