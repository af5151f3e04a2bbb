#include "common/wipe.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <vector>

namespace iop {
namespace {

bool all_zero(const char* p, std::size_t n) {
  return std::all_of(p, p + n, [](char c) { return c == 0; });
}

TEST(SecureWipe, StringWipesTheWholeCapacityAndEmpties) {
  std::string s(200, 'x');
  s.resize(10);  // 190 bytes of an earlier, longer value are still in the buffer
  const std::size_t capacity = s.capacity();
  const char* data = s.data();
  secure_wipe(s);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.capacity(), capacity);  // the same buffer, so it can be inspected
  EXPECT_EQ(s.data(), data);
  EXPECT_TRUE(all_zero(s.data(), capacity));
}

TEST(SecureWipe, StringWipesTheSmallStringBuffer) {
  std::string s = "pw1234";
  s.clear();  // the bytes stay in the small buffer
  secure_wipe(s);
  EXPECT_TRUE(all_zero(s.data(), s.capacity()));
}

TEST(SecureWipe, ByteVectorWipesTheWholeCapacity) {
  std::vector<unsigned char> v(64, 0xAB);
  v.resize(3);
  secure_wipe(v);
  EXPECT_TRUE(v.empty());
  const auto* p = v.data();
  EXPECT_TRUE(std::all_of(p, p + v.capacity(), [](unsigned char c) { return c == 0; }));
}

TEST(SecureWipe, SpansWipeExactlyTheirBytes) {
  std::array<char, 8> chars{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'};
  secure_wipe(std::span<char>(chars).subspan(2, 4));
  EXPECT_EQ(std::string(chars.data(), 8), std::string("ab\0\0\0\0gh", 8));

  std::array<std::byte, 3> bytes{std::byte{1}, std::byte{2}, std::byte{3}};
  secure_wipe(std::span<std::byte>(bytes));
  EXPECT_EQ(bytes, (std::array<std::byte, 3>{}));

  std::array<unsigned char, 2> u{7, 9};
  secure_wipe(std::span<unsigned char>(u));
  EXPECT_EQ(u, (std::array<unsigned char, 2>{}));

  secure_wipe(std::span<char>());  // an empty span is fine
}

}  // namespace
}  // namespace iop
