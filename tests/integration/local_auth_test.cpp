// The proxy's local password check against a real credentials database.

#include "auth/local_auth.hpp"

#include <gtest/gtest.h>

#include "auth/password_hash.hpp"
#include "tests/support/process.hpp"
#include "tests/support/run_coro.hpp"

namespace iop::auth {
namespace {

using namespace std::chrono_literals;

class LocalAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = storage::MasterKey::create(dir_.path() / "master.key").value();
    store_ = storage::CredentialsStore::open(dir_.path() / "credentials.db", *key_).value();
    storage::Credentials row;
    row.email = "alice@example.com";
    row.refresh_token = Secret("rt.x");
    ASSERT_TRUE(store_->upsert_account(row).has_value());
    set_password("right");
  }
  void TearDown() override { pool_.join(); }

  void set_password(const char* password, const char* email = "alice@example.com",
                    ScryptParams params = weak) {
    const auto hash = hash_password(Secret(password), params).value();
    ASSERT_TRUE(store_->set_local_password_hash(email, hash).has_value());
  }

  void add_account(const char* email, const char* password) {
    storage::Credentials row;
    row.email = email;
    row.refresh_token = Secret("rt.y");
    ASSERT_TRUE(store_->upsert_account(row).has_value());
    set_password(password, email);
  }

  // Small scrypt parameters and delays keep the suite fast: the strength of the hash is not
  // what these tests check (tests/unit/auth/password_hash_test.cpp does).
  static constexpr ScryptParams weak{10, 8, 1};
  static LocalAuthSettings settings(int address_max_failures = 10) {
    LocalAuthSettings s;
    s.cache_ttl = 5min;
    s.failure_delay = 1ms;
    s.limits.address_max_failures = address_max_failures;
    s.limits.failure_window = 5min;
    s.limits.account_free_failures = 3;
    s.limits.account_delay_base = 1ms;
    s.limits.account_delay_cap = 8ms;
    s.hash_params = weak;
    return s;
  }

  LocalAuthOutcome check(LocalAuthenticator& auth, const std::string& user, const char* password,
                         const std::string& address = "127.0.0.1") {
    return test::run_coro<LocalAuthOutcome>(
        [&auth, user, password, address] { return auth.check(user, Secret(password), address); });
  }

  test::TempDir dir_;
  std::optional<storage::MasterKey> key_;
  std::unique_ptr<storage::CredentialsStore> store_;
  net::thread_pool pool_{2};
};

TEST_F(LocalAuthTest, RightPasswordOnceThenFromTheCache) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings());
  auto first = check(auth, "Alice@Example.com", "right");
  EXPECT_EQ(first.result, LocalAuthResult::ok);
  EXPECT_EQ(first.email, "alice@example.com");
  EXPECT_FALSE(first.from_cache);
  auto second = check(auth, "alice@example.com", "right");
  EXPECT_EQ(second.result, LocalAuthResult::ok);
  EXPECT_TRUE(second.from_cache);
  const auto wrong = check(auth, "alice@example.com", "wrong");
  EXPECT_EQ(wrong.result, LocalAuthResult::bad_credentials);
  EXPECT_TRUE(wrong.account_exists) << "the connection log files it under alice";
  const auto unknown = check(auth, "nobody@example.com", "wrong");
  EXPECT_EQ(unknown.result, LocalAuthResult::bad_credentials);
  EXPECT_FALSE(unknown.account_exists);
}

TEST_F(LocalAuthTest, ChangingThePasswordInvalidatesTheCache) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings());
  ASSERT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::ok);
  set_password("new");
  EXPECT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::bad_credentials);
  EXPECT_EQ(check(auth, "alice@example.com", "new").result, LocalAuthResult::ok);
}

TEST_F(LocalAuthTest, RemovedAccountsAndAccountsWithoutPasswordFail) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings());
  ASSERT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::ok);
  ASSERT_TRUE(store_->remove("alice@example.com").value());
  EXPECT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::bad_credentials);
  storage::Credentials row;
  row.email = "nopass@example.com";
  ASSERT_TRUE(store_->upsert_account(row).has_value());
  EXPECT_EQ(check(auth, "nopass@example.com", "").result, LocalAuthResult::bad_credentials);
  EXPECT_EQ(check(auth, "nopass@example.com", "x").result, LocalAuthResult::bad_credentials);
  EXPECT_EQ(check(auth, "not an email", "x").result, LocalAuthResult::bad_credentials);
}

TEST_F(LocalAuthTest, TooManyFailuresFromOneAddressAreRateLimited) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings(3));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(check(auth, "alice@example.com", "wrong", "10.0.0.1").result,
              LocalAuthResult::bad_credentials);
  }
  EXPECT_EQ(check(auth, "alice@example.com", "right", "10.0.0.1").result,
            LocalAuthResult::rate_limited);
  EXPECT_EQ(check(auth, "alice@example.com", "right", "10.0.0.2").result, LocalAuthResult::ok)
      << "other addresses are unaffected";
}

// Issue #7, item 1: the limit was checked when an attempt started but counted only after scrypt,
// so 60 parallel wrong passwords were all checked and a correct 61st logged in.
TEST_F(LocalAuthTest, ParallelWrongAttemptsFromOneAddressAreNotAllChecked) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings(10));
  auto results = test::run_concurrently<LocalAuthOutcome>(
      60, 2, [&auth](int) { return auth.check("alice@example.com", Secret("wrong"), "10.0.0.1"); });
  int refused = 0;
  for (const auto& r : results) {
    refused += r.result == LocalAuthResult::rate_limited ? 1 : 0;
    EXPECT_NE(r.result, LocalAuthResult::ok);
  }
  EXPECT_EQ(auth.verifications(), 10u) << "only the address limit's worth reached scrypt";
  EXPECT_EQ(refused, 50);
  EXPECT_EQ(check(auth, "alice@example.com", "right", "10.0.0.1").result,
            LocalAuthResult::rate_limited);
  EXPECT_EQ(auth.verifications(), 10u);
}

// Every local mail client comes from 127.0.0.1: one local script failing for account A must not
// slow, let alone lock out, account B.
TEST_F(LocalAuthTest, LoopbackFailuresOfOneAccountNeverDelayAnother) {
  add_account("bob@example.com", "bobs");
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings(10));
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(check(auth, "alice@example.com", "wrong", "127.0.0.1").result,
              LocalAuthResult::bad_credentials);
  }
  const auto bob = check(auth, "bob@example.com", "bobs", "127.0.0.1");
  EXPECT_EQ(bob.result, LocalAuthResult::ok);
  EXPECT_EQ(bob.delay, 0ms);
  // Alice's own right password is slowed by the capped delay, never refused.
  const auto alice = check(auth, "alice@example.com", "right", "127.0.0.1");
  EXPECT_EQ(alice.result, LocalAuthResult::ok);
  EXPECT_EQ(alice.delay, 8ms);
  // ...and success clears it.
  EXPECT_EQ(check(auth, "alice@example.com", "wrong", "127.0.0.1").delay, 0ms);
}

TEST_F(LocalAuthTest, PerAccountDelayGrowsAndIsCapped) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings(10));
  std::vector<std::chrono::milliseconds> delays;
  for (int i = 0; i < 8; ++i) {
    // A different address each time: the delay follows the account.
    delays.push_back(
        check(auth, "alice@example.com", "wrong", "10.0.3." + std::to_string(i)).delay);
  }
  EXPECT_EQ(delays,
            (std::vector<std::chrono::milliseconds>{0ms, 0ms, 0ms, 0ms, 1ms, 2ms, 4ms, 8ms}));
  EXPECT_EQ(check(auth, "alice@example.com", "right", "10.0.4.1").result, LocalAuthResult::ok);
}

TEST_F(LocalAuthTest, InFlightAttemptsCountTowardsTheAccountDelay) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings(10));
  auto results = test::run_concurrently<LocalAuthOutcome>(12, 2, [&auth](int) {
    return auth.check("alice@example.com", Secret("wrong"), "127.0.0.1");
  });
  int delayed = 0;
  for (const auto& r : results) {
    delayed += r.delay > 0ms ? 1 : 0;
  }
  // Each attempt sees those started before it, finished or not: the first four see at most the
  // 3 free ones, the other eight are delayed.
  EXPECT_EQ(delayed, 8);
}

// Issue #7, item 8: an unknown account failed faster than a wrong password (no scrypt).
TEST_F(LocalAuthTest, EveryFailureRunsTheSameVerification) {
  storage::Credentials row;
  row.email = "nopass@example.com";
  ASSERT_TRUE(store_->upsert_account(row).has_value());
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings(100));
  std::uint64_t before = auth.verifications();
  for (const auto& [user, password] :
       std::vector<std::pair<std::string, const char*>>{{"alice@example.com", "wrong"},
                                                        {"nobody@example.com", "x"},
                                                        {"nopass@example.com", "x"},
                                                        {"nopass@example.com", ""},
                                                        {"alice@example.com", ""},
                                                        {"not an email", "x"}}) {
    EXPECT_EQ(check(auth, user, password, "10.0.5.1").result, LocalAuthResult::bad_credentials)
        << user;
    EXPECT_EQ(auth.verifications(), before + 1) << user << ": exactly one scrypt check";
    before = auth.verifications();
  }
}

// Issue #7, item 9: a hash made with older, weaker parameters is replaced on the next login.
TEST_F(LocalAuthTest, AWeakHashIsUpgradedOnTheNextSuccessfulLogin) {
  auto s = settings(10);
  s.hash_params = ScryptParams{11, 8, 1};
  LocalAuthenticator auth(*store_, pool_.get_executor(), s);
  EXPECT_EQ(check(auth, "alice@example.com", "wrong").result, LocalAuthResult::bad_credentials);
  EXPECT_EQ(hash_parameters(store_->get("alice@example.com")->local_password_hash)->log2_n, 10)
      << "a failed login changes nothing";
  ASSERT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::ok);
  const auto upgraded = store_->get("alice@example.com")->local_password_hash;
  EXPECT_EQ(hash_parameters(upgraded)->log2_n, 11);
  EXPECT_TRUE(verify_password(Secret("right"), upgraded));
  // The cache is keyed on the new hash: the next login needs no scrypt.
  const auto next = check(auth, "alice@example.com", "right");
  EXPECT_EQ(next.result, LocalAuthResult::ok);
  EXPECT_TRUE(next.from_cache);
  EXPECT_EQ(check(auth, "alice@example.com", "wrong").result, LocalAuthResult::bad_credentials);
}

TEST_F(LocalAuthTest, ACurrentHashIsLeftAlone) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), settings(10));
  const auto before = store_->get("alice@example.com")->local_password_hash;
  ASSERT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::ok);
  EXPECT_EQ(store_->get("alice@example.com")->local_password_hash, before);
}

}  // namespace
}  // namespace iop::auth
