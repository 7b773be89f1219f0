// CRC-32 against the standard check value and zlib's chaining behaviour.
#include <gtest/gtest.h>

#include <string>

#include "util/crc32.h"

namespace sy {
namespace {

TEST(Crc32, StandardCheckValues) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32(check.data(), check.size()), 0xCBF43926u);  // the catalogue's check value
  EXPECT_EQ(crc32("", 0), 0u);
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(crc32(fox.data(), fox.size()), 0x414FA339u);
}

TEST(Crc32, ChainsAcrossPiecesOfAnyLength) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text.push_back(char(i * 7 + 3));
  const uint32_t whole = crc32(text.data(), text.size());
  for (size_t cut : {size_t(0), size_t(1), size_t(3), size_t(5), size_t(517), text.size()})
    EXPECT_EQ(crc32(text.data() + cut, text.size() - cut, crc32(text.data(), cut)), whole) << cut;
}

}  // namespace
}  // namespace sy
