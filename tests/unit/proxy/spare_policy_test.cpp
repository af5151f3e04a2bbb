#include "proxy/spare_policy.hpp"

#include <gtest/gtest.h>

namespace iop::proxy {
namespace {

using namespace std::chrono_literals;

// An injected clock: every time is t0 plus a duration.
const SpareTime t0 = SpareTime(std::chrono::hours(1000));

SparePolicy policy() {
  SparePolicy p;
  p.enabled = true;
  p.window = 10min;
  p.max_idle = 20s;
  return p;
}

SpareState after_login_at(SpareTime t) {
  SpareState s;
  note_login(s, t);
  return s;
}

TEST(SparePolicy, OpensOnlyWhenOnAndAfterARecentLogin) {
  EXPECT_TRUE(should_open_spare(policy(), after_login_at(t0), t0));
  EXPECT_TRUE(should_open_spare(policy(), after_login_at(t0), t0 + 9min));
  EXPECT_FALSE(should_open_spare(policy(), after_login_at(t0), t0 + 10min)) << "window over";
  SparePolicy off = policy();
  off.enabled = false;
  EXPECT_FALSE(should_open_spare(off, after_login_at(t0), t0)) << "preconnect = false";
  EXPECT_FALSE(should_open_spare(policy(), SpareState{}, t0)) << "no login to this server yet";
}

TEST(SparePolicy, AtMostOneParkedOrInTheMaking) {
  auto s = after_login_at(t0);
  s.parked = true;
  EXPECT_FALSE(should_open_spare(policy(), s, t0));
  s.parked = false;
  s.making = true;
  EXPECT_FALSE(should_open_spare(policy(), s, t0));
}

TEST(SparePolicy, AFailureStopsSparesUntilTheNextLogin) {
  // A server that refuses spares or drops them early costs one attempt per login, not a loop.
  auto s = after_login_at(t0);
  s.failed = true;
  EXPECT_FALSE(should_open_spare(policy(), s, t0 + 1s));
  EXPECT_FALSE(should_open_spare(policy(), s, t0 + 5min));
  note_login(s, t0 + 5min);
  EXPECT_FALSE(s.failed);
  EXPECT_TRUE(should_open_spare(policy(), s, t0 + 5min));
}

TEST(SparePolicy, ASpareIsUsableForMaxIdleAfterItWasOpened) {
  EXPECT_TRUE(spare_usable(policy(), t0, t0));
  EXPECT_TRUE(spare_usable(policy(), t0, t0 + 19s));
  EXPECT_FALSE(spare_usable(policy(), t0, t0 + 20s));
  EXPECT_FALSE(spare_usable(policy(), t0, t0 + 1h));
}

}  // namespace
}  // namespace iop::proxy
