#include "auth/login_limiter.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace iop::auth {
namespace {

using namespace std::chrono_literals;
using Outcome = LoginLimiter::Outcome;

// A fake clock: the limiter never reads the time itself.
const LoginLimiter::TimePoint t0{std::chrono::hours(1000)};

LoginLimits limits() {
  LoginLimits l;
  l.address_max_failures = 10;
  l.failure_window = 5min;
  l.account_free_failures = 3;
  l.account_delay_base = 250ms;
  l.account_delay_cap = 4s;
  l.max_entries = 100;
  return l;
}

TEST(AccountDelay, FreeThenDoublingThenCapped) {
  const auto l = limits();
  EXPECT_EQ(account_delay(0, l), 0ms);
  EXPECT_EQ(account_delay(3, l), 0ms);
  EXPECT_EQ(account_delay(4, l), 250ms);
  EXPECT_EQ(account_delay(5, l), 500ms);
  EXPECT_EQ(account_delay(6, l), 1000ms);
  EXPECT_EQ(account_delay(7, l), 2000ms);
  EXPECT_EQ(account_delay(8, l), 4000ms);
  EXPECT_EQ(account_delay(9, l), 4000ms);
  EXPECT_EQ(account_delay(1'000'000, l), 4000ms) << "no overflow, still capped";
}

TEST(LoopbackAddress, RecognizesEveryLoopbackForm) {
  for (const char* yes :
       {"127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"}) {
    EXPECT_TRUE(is_loopback_address(yes)) << yes;
  }
  for (const char* no : {"10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "", "localhost",
                         "127.0.0.1x", "fe80::1"}) {
    EXPECT_FALSE(is_loopback_address(no)) << no;
  }
}

TEST(LoginLimiter, InFlightAttemptsCountAgainstTheAddressLimit) {
  LoginLimiter limiter(limits());
  std::vector<LoginLimiter::Ticket> tickets;
  int admitted = 0;
  // 60 attempts start before any of them finishes (scrypt is slow): only 10 get through.
  for (int i = 0; i < 60; ++i) {
    tickets.push_back(limiter.begin("10.0.0.1", "alice@example.com", t0));
    admitted += tickets.back().admitted ? 1 : 0;
  }
  EXPECT_EQ(admitted, 10);
  for (const auto& t : tickets) {
    limiter.finish(t, Outcome::failure, t0);
  }
  EXPECT_FALSE(limiter.begin("10.0.0.1", "bob@example.com", t0 + 1s).admitted)
      << "the address stays limited, whichever account it tries";
  EXPECT_TRUE(limiter.begin("10.0.0.2", "alice@example.com", t0 + 1s).admitted)
      << "other addresses are unaffected";
}

TEST(LoginLimiter, AddressFailuresExpireAfterTheWindow) {
  LoginLimiter limiter(limits());
  for (int i = 0; i < 10; ++i) {
    limiter.finish(limiter.begin("10.0.0.1", "a@example.com", t0), Outcome::failure, t0);
  }
  EXPECT_FALSE(limiter.begin("10.0.0.1", "a@example.com", t0 + 4min).admitted);
  // Refused attempts kept the count alive from t0 + 4 min.
  EXPECT_FALSE(limiter.begin("10.0.0.1", "a@example.com", t0 + 8min).admitted);
  EXPECT_TRUE(limiter.begin("10.0.0.1", "a@example.com", t0 + 14min).admitted);
}

TEST(LoginLimiter, ASuccessDoesNotClearTheAddressCount) {
  LoginLimiter limiter(limits());
  for (int i = 0; i < 9; ++i) {
    limiter.finish(limiter.begin("10.0.0.1", "victim@example.com", t0), Outcome::failure, t0);
  }
  limiter.finish(limiter.begin("10.0.0.1", "own@example.com", t0), Outcome::success, t0);
  limiter.finish(limiter.begin("10.0.0.1", "victim@example.com", t0), Outcome::failure, t0);
  EXPECT_FALSE(limiter.begin("10.0.0.1", "victim@example.com", t0).admitted);
}

TEST(LoginLimiter, LoopbackIsNeverRefusedAndIsKeyedOnTheAccount) {
  LoginLimiter limiter(limits());
  // A local script fails 100 times for account A from 127.0.0.1.
  for (int i = 0; i < 100; ++i) {
    auto t = limiter.begin("127.0.0.1", "a@example.com", t0);
    ASSERT_TRUE(t.admitted) << "a per-account limit delays, it never refuses";
    limiter.finish(t, Outcome::failure, t0);
  }
  const auto b = limiter.begin("127.0.0.1", "b@example.com", t0);
  EXPECT_TRUE(b.admitted);
  EXPECT_EQ(b.delay, 0ms) << "A's failures never slow B";
  const auto a = limiter.begin("::1", "a@example.com", t0);
  EXPECT_TRUE(a.admitted);
  EXPECT_EQ(a.delay, 4s) << "A itself is slowed, at most by the cap";
}

TEST(LoginLimiter, AccountDelayGrowsIsCappedAndClearsOnSuccess) {
  LoginLimiter limiter(limits());
  std::vector<std::chrono::milliseconds> delays;
  for (int i = 0; i < 9; ++i) {
    // From a different address each time: the account delay follows the account everywhere.
    auto t = limiter.begin("10.0.1." + std::to_string(i), "a@example.com", t0);
    ASSERT_TRUE(t.admitted);
    delays.push_back(t.delay);
    limiter.finish(t, Outcome::failure, t0);
  }
  EXPECT_EQ(delays, (std::vector<std::chrono::milliseconds>{0ms, 0ms, 0ms, 0ms, 250ms, 500ms,
                                                            1000ms, 2000ms, 4000ms}));
  auto right = limiter.begin("10.0.2.1", "a@example.com", t0);
  EXPECT_TRUE(right.admitted);
  limiter.finish(right, Outcome::success, t0);
  EXPECT_EQ(limiter.begin("10.0.2.1", "a@example.com", t0).delay, 0ms);
}

TEST(LoginLimiter, InFlightAttemptsCountTowardsTheAccountDelay) {
  LoginLimiter limiter(limits());
  std::vector<std::chrono::milliseconds> delays;
  for (int i = 0; i < 8; ++i) {
    delays.push_back(limiter.begin("127.0.0.1", "a@example.com", t0).delay);
  }
  EXPECT_EQ(delays, (std::vector<std::chrono::milliseconds>{0ms, 0ms, 0ms, 0ms, 250ms, 500ms,
                                                            1000ms, 2000ms}));
}

TEST(LoginLimiter, AccountFailuresExpire) {
  LoginLimiter limiter(limits());
  for (int i = 0; i < 8; ++i) {
    limiter.finish(limiter.begin("127.0.0.1", "a@example.com", t0), Outcome::failure, t0);
  }
  EXPECT_EQ(limiter.begin("127.0.0.1", "a@example.com", t0 + 1min).delay, 4s);
  EXPECT_EQ(limiter.begin("127.0.0.1", "b@example.com", t0 + 6min).delay, 0ms);
  // The 1-minute attempt above is still in flight (never finished), the failures are gone.
  EXPECT_EQ(limiter.begin("127.0.0.1", "a@example.com", t0 + 6min).delay, 0ms);
}

TEST(LoginLimiter, NeutralOutcomesOnlyRelease) {
  LoginLimiter limiter(limits());
  for (int i = 0; i < 20; ++i) {
    auto t = limiter.begin("10.0.0.1", "a@example.com", t0);
    ASSERT_TRUE(t.admitted);
    limiter.finish(t, Outcome::neutral, t0);
  }
  EXPECT_EQ(limiter.address_entries(), 0u);
  EXPECT_EQ(limiter.account_entries(), 0u);
}

TEST(LoginLimiter, TablesStayBounded) {
  LoginLimiter limiter(limits());  // max_entries = 100
  for (int i = 0; i < 5'000; ++i) {
    const std::string addr = "10." + std::to_string(i / 65536) + "." +
                             std::to_string(i / 256 % 256) + "." + std::to_string(i % 256);
    const auto now = t0 + std::chrono::milliseconds(i);
    limiter.finish(limiter.begin(addr, "user" + std::to_string(i) + "@example.com", now),
                   Outcome::failure, now);
  }
  EXPECT_LE(limiter.address_entries(), 100u);
  EXPECT_LE(limiter.account_entries(), 100u);
  // The most recent offender is still remembered.
  for (int i = 0; i < 9; ++i) {
    limiter.finish(limiter.begin("10.0.19.135", "x@example.com", t0 + 5s), Outcome::failure,
                   t0 + 5s);
  }
  EXPECT_FALSE(limiter.begin("10.0.19.135", "x@example.com", t0 + 5s).admitted);
}

}  // namespace
}  // namespace iop::auth
