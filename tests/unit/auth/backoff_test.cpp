#include "auth/backoff.hpp"

#include <gtest/gtest.h>

namespace iop::auth {
namespace {

using namespace std::chrono_literals;

const BackoffPolicy policy{5, 250ms, 8000ms};

TEST(Backoff, DoublesPerAttemptWithinTheJitterBand) {
  EXPECT_EQ(backoff_delay(policy, 1, 0.0, std::nullopt), 125ms);
  EXPECT_EQ(backoff_delay(policy, 2, 0.0, std::nullopt), 250ms);
  EXPECT_EQ(backoff_delay(policy, 3, 0.0, std::nullopt), 500ms);
  EXPECT_EQ(backoff_delay(policy, 1, 0.5, std::nullopt), 187ms);
  EXPECT_EQ(backoff_delay(policy, 3, 0.999, std::nullopt), 999ms);
}

TEST(Backoff, JitterStaysBetweenHalfAndAll) {
  for (int attempt = 1; attempt <= 8; ++attempt) {
    for (const double j : {0.0, 0.1, 0.37, 0.5, 0.9, 0.99999}) {
      const auto d = backoff_delay(policy, attempt, j, std::nullopt);
      const auto full = std::min(policy.base * (1 << (attempt - 1)), policy.cap);
      EXPECT_GE(d, full / 2) << attempt << " " << j;
      EXPECT_LE(d, full) << attempt << " " << j;
    }
  }
}

TEST(Backoff, CappedAndNeverOverflowing) {
  EXPECT_EQ(backoff_delay(policy, 6, 0.0, std::nullopt), 4000ms);
  EXPECT_EQ(backoff_delay(policy, 50, 0.0, std::nullopt), 4000ms);
  EXPECT_EQ(backoff_delay(policy, 1000000, 0.999999, std::nullopt).count() / 100, 79);
}

TEST(Backoff, OddInputsAreClamped) {
  EXPECT_EQ(backoff_delay(policy, 0, 0.0, std::nullopt), 125ms) << "attempt counts from 1";
  EXPECT_EQ(backoff_delay(policy, -3, 0.0, std::nullopt), 125ms);
  EXPECT_EQ(backoff_delay(policy, 1, -5.0, std::nullopt), 125ms);
  EXPECT_EQ(backoff_delay(policy, 1, 7.0, std::nullopt), 250ms);
  EXPECT_EQ(backoff_delay(BackoffPolicy{3, 0ms, 0ms}, 2, 0.5, std::nullopt), 0ms);
}

TEST(Backoff, LongerRetryAfterWins) {
  EXPECT_EQ(backoff_delay(policy, 1, 0.0, 2s), 2000ms);
  EXPECT_EQ(backoff_delay(policy, 6, 0.0, 1s), 4000ms) << "a shorter Retry-After does not cut it";
  EXPECT_EQ(backoff_delay(policy, 1, 0.0, 0s), 125ms);
}

TEST(Backoff, RetryAfterIsCappedAtAMinute) {
  EXPECT_EQ(backoff_delay(policy, 1, 0.0, 3600s), 60000ms);
  EXPECT_EQ(backoff_delay(policy, 1, 0.0, 60s), 60000ms);
}

}  // namespace
}  // namespace iop::auth
