#include "common/result.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "common/asio.hpp"
#include "tests/support/run_coro.hpp"

namespace iop {
namespace {

Result<int> number(bool ok, int value = 7) {
  if (!ok) {
    return fail(Errc::not_found, "no number");
  }
  return value;
}

Result<std::unique_ptr<int>> owned(bool ok) {
  if (!ok) {
    return fail(Errc::storage_unavailable, "no box");
  }
  return std::make_unique<int>(5);
}

Result<void> nothing(bool ok) {
  if (!ok) {
    return fail(Errc::internal, "nothing failed");
  }
  return {};
}

int steps = 0;

Result<int> sum(bool first_ok, bool second_ok) {
  steps = 0;
  IOP_TRY_ASSIGN(const int a, number(first_ok, 1));
  ++steps;
  IOP_TRY_ASSIGN(auto b, number(second_ok, 2));
  ++steps;
  IOP_TRY_ASSIGN(std::unique_ptr<int> box, owned(true));  // move-only values are moved out
  int total = 0;
  IOP_TRY_ASSIGN(total, number(true, a + b + *box));  // assigns an existing variable
  // Commas in the expression (template arguments) are fine.
  IOP_TRY_ASSIGN(auto m, Result<std::map<int, int>>(std::map<int, int>{{1, total}}));
  IOP_TRY(nothing(true));
  return m.at(1);
}

TEST(IopTryAssign, AssignsTheValues) {
  const auto r = sum(true, true);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, 8);
  EXPECT_EQ(steps, 2);
}

TEST(IopTryAssign, ReturnsTheFirstErrorAndStopsThere) {
  const auto first = sum(false, true);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, Errc::not_found);
  EXPECT_EQ(first.error().message, "no number");
  EXPECT_EQ(steps, 0);

  const auto second = sum(true, false);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::not_found);
  EXPECT_EQ(steps, 1);
}

Result<int> try_void(bool ok) {
  IOP_TRY(nothing(ok));
  return 1;
}

TEST(IopTry, ReturnsTheErrorOfAVoidResult) {
  EXPECT_EQ(try_void(true).value_or(0), 1);
  const auto r = try_void(false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::internal);
  EXPECT_EQ(r.error().message, "nothing failed");
}

awaitable<Result<int>> async_number(bool ok, int value) { co_return number(ok, value); }

awaitable<Result<std::string>> co_sum(bool first_ok, bool second_ok) {
  IOP_CO_TRY_ASSIGN(const int a, co_await async_number(first_ok, 3));
  IOP_CO_TRY(nothing(second_ok));
  IOP_CO_TRY_ASSIGN(auto box, owned(true));
  co_return std::to_string(a + *box);
}

TEST(IopCoTry, AssignsAndPropagatesInCoroutines) {
  const auto ok = test::run_coro<Result<std::string>>([] { return co_sum(true, true); });
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(*ok, "8");

  const auto first = test::run_coro<Result<std::string>>([] { return co_sum(false, true); });
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, Errc::not_found);

  const auto second = test::run_coro<Result<std::string>>([] { return co_sum(true, false); });
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::internal);
}

}  // namespace
}  // namespace iop
