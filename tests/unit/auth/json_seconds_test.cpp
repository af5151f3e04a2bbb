#include "auth/json_seconds.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

namespace iop::auth {
namespace {

using json = nlohmann::json;

TEST(JsonSeconds, IntegersAsTheyAre) {
  EXPECT_EQ(json_seconds(json(3599)), 3599);
  EXPECT_EQ(json_seconds(json(0)), 0);
  EXPECT_EQ(json_seconds(json(-5)), -5);  // the caller's range check refuses it
}

TEST(JsonSeconds, HugeUnsignedSaturates) {
  EXPECT_EQ(json_seconds(json(std::numeric_limits<std::uint64_t>::max())),
            std::numeric_limits<std::int64_t>::max());
}

TEST(JsonSeconds, StringsOfDigits) {
  EXPECT_EQ(json_seconds(json("3600")), 3600);
  EXPECT_EQ(json_seconds(json(" 900\t")), 900);
  EXPECT_EQ(json_seconds(json("999999999999")), 999999999999);
  EXPECT_EQ(json_seconds(json("1000000000000")), std::nullopt);  // 13 digits
  EXPECT_EQ(json_seconds(json("")), std::nullopt);
  EXPECT_EQ(json_seconds(json("-1")), std::nullopt);
  EXPECT_EQ(json_seconds(json("+1")), std::nullopt);
  EXPECT_EQ(json_seconds(json("1h")), std::nullopt);
  EXPECT_EQ(json_seconds(json("1 2")), std::nullopt);
}

TEST(JsonSeconds, OtherTypesAreRefused) {
  EXPECT_EQ(json_seconds(json(1.5)), std::nullopt);
  EXPECT_EQ(json_seconds(json(true)), std::nullopt);
  EXPECT_EQ(json_seconds(json(nullptr)), std::nullopt);
  EXPECT_EQ(json_seconds(json::array({1})), std::nullopt);
}

TEST(SecondsText, RetryAfterHeaderValue) {
  EXPECT_EQ(seconds_text(" 120\r\n"), 120);
  EXPECT_EQ(seconds_text("Wed, 21 Oct 2015 07:28:00 GMT"), std::nullopt);
}

}  // namespace
}  // namespace iop::auth
