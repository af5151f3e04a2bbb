#include "common/duration.hpp"

#include <gtest/gtest.h>

namespace iop {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesEachUnit) {
  EXPECT_EQ(parse_duration("250ms"), 250ms);
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("5m"), 5min);
  EXPECT_EQ(parse_duration("45min"), 45min);
  EXPECT_EQ(parse_duration("2h"), 2h);
  EXPECT_EQ(parse_duration("7d"), std::chrono::hours(24 * 7));
  EXPECT_EQ(parse_duration("0s"), 0ms);
}

TEST(Duration, RejectsEverythingElse) {
  for (const char* bad : {"", "fast", "5", "ms", "-5s", "1.5s", " 5s", "5s ", "5 s", "5S", "5sec",
                          "99999999999999999999d", "9223372036854775807d"}) {
    EXPECT_EQ(parse_duration(bad), std::nullopt) << bad;
  }
}

TEST(Duration, FormatsShortestExactUnit) {
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(90s), "90s");
  EXPECT_EQ(format_duration(5min), "5m");
  EXPECT_EQ(format_duration(std::chrono::hours(48)), "2d");
  EXPECT_EQ(format_duration(0ms), "0s");
}

}  // namespace
}  // namespace iop
