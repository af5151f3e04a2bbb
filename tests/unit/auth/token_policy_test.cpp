#include "auth/token_policy.hpp"

#include <gtest/gtest.h>

namespace iop::auth {
namespace {

using namespace std::chrono_literals;

const SystemTime now = from_unix_seconds(1'800'000'000);
const std::int64_t t = 1'800'000'000;

TEST(TokenPolicy, SessionsNeedTheLongerLifetime) {
  const FreshnessPolicy p{5min, 45min};
  EXPECT_EQ(need_for(p, TokenUse::session).min_remaining, 45min);
  EXPECT_EQ(need_for(p, TokenUse::immediate).min_remaining, 5min);
  const FreshnessPolicy odd{50min, 10min};
  EXPECT_EQ(need_for(odd, TokenUse::session).min_remaining, 50min);
}

TEST(TokenPolicy, FreshEnoughAtTheBoundary) {
  const TokenNeed need{300s, 0};
  EXPECT_TRUE(satisfies(need, t + 300, 1, now));
  EXPECT_FALSE(satisfies(need, t + 299, 1, now));
  EXPECT_FALSE(satisfies(need, t - 10, 1, now));
  EXPECT_FALSE(satisfies(need, 0, 1, now)) << "no token at all";
}

TEST(TokenPolicy, ForcedRefreshWantsANewerToken) {
  const TokenNeed need{0s, 5000};
  EXPECT_FALSE(satisfies(need, t + 3600, 4999, now));
  EXPECT_TRUE(satisfies(need, t + 3600, 5000, now));
}

TEST(TokenPolicy, AFailedRefreshServesTheHeldTokenOnlyWhenItWasNotRefused) {
  EXPECT_TRUE(may_serve_after_failed_refresh(TokenNeed{300s, 0}, t + 61, 4999, now));
  EXPECT_FALSE(may_serve_after_failed_refresh(TokenNeed{300s, 0}, t + 60, 4999, now))
      << "due within the minute";
  // A forced refresh (the upstream refused the held token) must not get it back.
  EXPECT_FALSE(may_serve_after_failed_refresh(TokenNeed{0s, 5000}, t + 3600, 4999, now));
  EXPECT_TRUE(may_serve_after_failed_refresh(TokenNeed{0s, 5000}, t + 3600, 5000, now));
}

TEST(TokenPolicy, KeepaliveIsDueAfterTheInterval) {
  const auto week = std::chrono::seconds(7 * 24 * 3600);
  const std::int64_t now_ms = t * 1000;
  EXPECT_FALSE(keepalive_due(now_ms - 1000, week, now));
  EXPECT_TRUE(keepalive_due(now_ms - 7 * 24 * 3600 * 1000LL, week, now));
  EXPECT_TRUE(keepalive_due(0, week, now)) << "never refreshed";
}

}  // namespace
}  // namespace iop::auth
