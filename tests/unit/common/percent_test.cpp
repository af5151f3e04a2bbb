#include "common/percent.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iop {

TEST(PercentDecode, DecodesEitherCaseOfHex) {
  EXPECT_EQ(percent_decode("p%40ss%3aw%2Fd"), "p@ss:w/d");
  EXPECT_EQ(percent_decode("%00"), std::string(1, '\0'));
  EXPECT_EQ(percent_decode("%ff%FF"), "\xff\xff");
  EXPECT_EQ(percent_decode(""), "");
  EXPECT_EQ(percent_decode("plain"), "plain");
}

TEST(PercentDecode, PlusIsSpaceOnlyInFormEncoding) {
  EXPECT_EQ(percent_decode("a+b%2B"), "a+b+");
  EXPECT_EQ(percent_decode("a+b%2B", PlusIs::space), "a b+");
}

TEST(PercentDecode, RejectsATruncatedOrNonHexEscape) {
  EXPECT_EQ(percent_decode("%"), std::nullopt);
  EXPECT_EQ(percent_decode("%4"), std::nullopt);
  EXPECT_EQ(percent_decode("ab%4"), std::nullopt);
  EXPECT_EQ(percent_decode("%4g"), std::nullopt);
  EXPECT_EQ(percent_decode("%g4"), std::nullopt);
  EXPECT_EQ(percent_decode("%%41"), std::nullopt);
  EXPECT_EQ(percent_decode("%41"), "A");  // an escape at the very end is complete
}

}  // namespace iop
