// tests/support/wait_until: both outcomes, and that a timeout fails the test naming what was
// awaited.

#include "tests/support/wait_until.hpp"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace iop::test {
namespace {

using namespace std::chrono_literals;

TEST(WaitUntil, ReturnsAtOnceWhenTheConditionAlreadyHolds) {
  int calls = 0;
  EXPECT_TRUE(wait_until([&] {
    ++calls;
    return true;
  }));
  EXPECT_EQ(calls, 1);
}

TEST(WaitUntil, ReturnsTrueWhenAnotherThreadMakesTheConditionHold) {
  std::atomic<bool> done{false};
  std::thread other([&] { done = true; });
  EXPECT_TRUE(wait_until([&] { return done.load(); }, 10s, "the other thread"));
  other.join();
}

TEST(WaitUntil, KeepsPollingUntilTheConditionHolds) {
  int calls = 0;
  EXPECT_TRUE(wait_until([&] { return ++calls == 5; }, 10s, "the fifth call"));
  EXPECT_EQ(calls, 5);
}

TEST(WaitUntil, TimeoutFailsTheTestNamingWhatWasAwaited) {
  bool result = true;
  int calls = 0;
  EXPECT_NONFATAL_FAILURE(result = wait_until(
                              [&] {
                                ++calls;
                                return false;
                              },
                              30ms, "the answer to everything"),
                          "timed out after 30 ms waiting for the answer to everything");
  EXPECT_FALSE(result);
  EXPECT_GE(calls, 2) << "checked at the start and again at the bound";
}

TEST(WaitUntil, TimeoutWithoutANameStillFails) {
  EXPECT_NONFATAL_FAILURE(wait_until([] { return false; }, 5ms), "waiting for a condition");
}

TEST(PollUntil, ReportsTheOutcomeWithoutFailingTheTest) {
  EXPECT_FALSE(poll_until([] { return false; }, 5ms));
  int calls = 0;
  EXPECT_TRUE(poll_until([&] { return ++calls == 3; }, 10s));
  EXPECT_EQ(calls, 3);
}

}  // namespace
}  // namespace iop::test
