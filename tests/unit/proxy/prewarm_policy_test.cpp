#include "proxy/prewarm_policy.hpp"

#include <gtest/gtest.h>

namespace iop::proxy {
namespace {

using namespace std::chrono_literals;

// An injected clock: every time is t0 plus a duration.
const PrewarmTime t0 = PrewarmTime(std::chrono::hours(1000));

PrewarmPolicy on(int max_per_account = 0) {
  PrewarmPolicy p;
  p.enabled = true;
  p.window = 30min;
  p.max_idle = 25min;
  p.min_token_life = 45min;
  p.min_useful_life = 1min;
  p.retry_after = 1min;
  p.max_per_account = max_per_account;
  return p;
}

AccountWarmth logged_in_at(PrewarmTime t, int in_use = 1) {
  AccountWarmth a;
  a.last_login = t;
  a.in_use = in_use;
  return a;
}

TEST(PrewarmPolicy, WarmsOnlyWhenOnAndAfterARecentLogin) {
  EXPECT_TRUE(should_warm(on(), logged_in_at(t0), t0));
  EXPECT_TRUE(should_warm(on(), logged_in_at(t0), t0 + 29min));
  EXPECT_FALSE(should_warm(on(), logged_in_at(t0), t0 + 30min)) << "window over";
  PrewarmPolicy off = on();
  off.enabled = false;
  EXPECT_FALSE(should_warm(off, logged_in_at(t0), t0)) << "prewarm = false";
  EXPECT_FALSE(should_warm(on(), AccountWarmth{}, t0)) << "never logged in";
}

TEST(PrewarmPolicy, AtMostOneWarmConnectionPerAccount) {
  auto a = logged_in_at(t0);
  a.warm = true;
  EXPECT_FALSE(should_warm(on(), a, t0));
  a.warm = false;
  a.warming = true;
  EXPECT_FALSE(should_warm(on(), a, t0));
}

TEST(PrewarmPolicy, BacksOffAfterAFailure) {
  auto a = logged_in_at(t0 + 10s);
  a.last_failure = t0;
  EXPECT_FALSE(should_warm(on(), a, t0 + 10s));
  EXPECT_FALSE(should_warm(on(), a, t0 + 59s));
  EXPECT_TRUE(should_warm(on(), a, t0 + 60s));
}

TEST(PrewarmPolicy, NeverWarmsAtTheAccountLimit) {
  EXPECT_TRUE(should_warm(on(2), logged_in_at(t0, 1), t0)) << "1 in use + 1 warm = 2";
  EXPECT_FALSE(should_warm(on(2), logged_in_at(t0, 2), t0)) << "2 in use: at the limit";
  EXPECT_FALSE(should_warm(on(1), logged_in_at(t0, 1), t0));
  EXPECT_TRUE(should_warm(on(0), logged_in_at(t0, 500), t0)) << "0: no limit";
}

TEST(PrewarmPolicy, CountsInUseParkedAndInTheMaking) {
  AccountWarmth a;
  a.in_use = 3;
  EXPECT_EQ(counted_connections(a), 3);
  a.warm = true;
  EXPECT_EQ(counted_connections(a), 4);
  a.warming = true;
  EXPECT_EQ(counted_connections(a), 5);
}

TEST(PrewarmPolicy, AdmissionAtTheLimit) {
  auto a = logged_in_at(t0, 1);
  a.warm = true;
  EXPECT_EQ(admit(on(2), a, true), Admission::take_warm) << "the warm one is already counted";
  EXPECT_EQ(admit(on(2), a, false), Admission::refused) << "1 in use + 1 parked (unusable)";
  a.warm = false;
  EXPECT_EQ(admit(on(2), a, false), Admission::fresh);
  a.in_use = 2;
  EXPECT_EQ(admit(on(2), a, false), Admission::refused);
  EXPECT_EQ(admit(on(0), a, false), Admission::fresh) << "no limit";
  a.warming = true;
  a.in_use = 1;
  EXPECT_EQ(admit(on(2), a, false), Admission::refused) << "one is being made: counted";
}

TEST(PrewarmPolicy, TokenWorthWarming) {
  EXPECT_TRUE(token_worth_warming(on(), t0 + 60min, t0));
  EXPECT_TRUE(token_worth_warming(on(), t0 + 46min, t0));
  EXPECT_FALSE(token_worth_warming(on(), t0 + 46min - 1s, t0));
  EXPECT_FALSE(token_worth_warming(on(), t0 - 1s, t0)) << "expired";
  EXPECT_TRUE(token_worth_warming(on(), std::nullopt, t0)) << "password login: no token";
}

TEST(PrewarmPolicy, AnExpiringTokenIsNeverHandedOut) {
  const WarmStamp stamp{t0, t0 + 60min};
  EXPECT_EQ(judge_warm(on(), stamp, t0, t0), WarmVerdict::usable);
  EXPECT_EQ(judge_warm(on(), stamp, t0 + 14min, t0 + 14min), WarmVerdict::usable);
  EXPECT_EQ(judge_warm(on(), stamp, t0 + 15min, t0 + 15min), WarmVerdict::usable);
  EXPECT_EQ(judge_warm(on(), stamp, t0 + 15min, t0 + 15min + 1ms), WarmVerdict::token_too_old);
  EXPECT_EQ(judge_warm(on(), stamp, t0 + 61min, t0 + 61min), WarmVerdict::token_too_old)
      << "expired outright";
}

TEST(PrewarmPolicy, ReplacedBeforeTheServerIdleLimit) {
  const WarmStamp password{t0, std::nullopt};
  EXPECT_EQ(judge_warm(on(), password, t0 + 24min, t0 + 24min), WarmVerdict::usable);
  EXPECT_EQ(judge_warm(on(), password, t0 + 25min, t0 + 25min), WarmVerdict::too_idle);
}

TEST(PrewarmPolicy, NotWantedAfterTheWindow) {
  const WarmStamp stamp{t0, std::nullopt};
  EXPECT_EQ(judge_warm(on(), stamp, t0 - 10min, t0 + 19min), WarmVerdict::usable);
  EXPECT_EQ(judge_warm(on(), stamp, t0 - 10min, t0 + 20min), WarmVerdict::not_wanted);
  EXPECT_EQ(judge_warm(on(), stamp, std::nullopt, t0), WarmVerdict::not_wanted);
}

TEST(PrewarmPolicy, RetireAtTheEarliestLimit) {
  // The token limit: expiry 50 min after creation, 45 min must remain: 5 min.
  EXPECT_EQ(retire_at(on(), WarmStamp{t0, t0 + 50min}, t0), t0 + 5min);
  // The idle limit.
  EXPECT_EQ(retire_at(on(), WarmStamp{t0, t0 + 90min}, t0 + 20min), t0 + 25min);
  // The window: last login 10 min before creation.
  EXPECT_EQ(retire_at(on(), WarmStamp{t0, t0 + 90min}, t0 - 10min), t0 + 20min);
  EXPECT_EQ(retire_at(on(), WarmStamp{t0, std::nullopt}, std::nullopt), t0);
  // Whatever retire_at says, judge_warm agrees just before and just after it.
  for (const auto& [stamp, login] :
       {std::pair{WarmStamp{t0, t0 + 50min}, t0}, std::pair{WarmStamp{t0, t0 + 90min}, t0 + 20min},
        std::pair{WarmStamp{t0, t0 + 90min}, t0 - 10min}}) {
    const auto at = retire_at(on(), stamp, login);
    EXPECT_EQ(judge_warm(on(), stamp, login, at - 1ms), WarmVerdict::usable);
    EXPECT_NE(judge_warm(on(), stamp, login, at + 1ms), WarmVerdict::usable);
  }
}

TEST(PrewarmPolicy, ByeDetection) {
  EXPECT_TRUE(holds_bye("* BYE Autologout; idle for too long\r\n"));
  EXPECT_TRUE(holds_bye("* 3 EXISTS\r\n* bye going away\r\n"));
  EXPECT_TRUE(holds_bye("* BYE\r\n"));
  EXPECT_FALSE(holds_bye("* BYE incomplete")) << "not a complete line yet";
  EXPECT_FALSE(holds_bye("* 3 EXISTS\r\n"));
  EXPECT_FALSE(holds_bye("* BYEBYE\r\n"));
  EXPECT_FALSE(holds_bye("a1 OK * BYE\r\n"));
  EXPECT_FALSE(holds_bye(""));
}

}  // namespace
}  // namespace iop::proxy
