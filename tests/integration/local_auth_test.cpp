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

  void set_password(const char* password) {
    const auto hash = hash_password(Secret(password), ScryptParams{10, 8, 1}).value();
    ASSERT_TRUE(store_->set_local_password_hash("alice@example.com", hash).has_value());
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
  LocalAuthenticator auth(*store_, pool_.get_executor(), {5min, 1ms, 10, 5min});
  auto first = check(auth, "Alice@Example.com", "right");
  EXPECT_EQ(first.result, LocalAuthResult::ok);
  EXPECT_EQ(first.email, "alice@example.com");
  EXPECT_FALSE(first.from_cache);
  auto second = check(auth, "alice@example.com", "right");
  EXPECT_EQ(second.result, LocalAuthResult::ok);
  EXPECT_TRUE(second.from_cache);
  EXPECT_EQ(check(auth, "alice@example.com", "wrong").result, LocalAuthResult::bad_credentials);
}

TEST_F(LocalAuthTest, ChangingThePasswordInvalidatesTheCache) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), {5min, 1ms, 10, 5min});
  ASSERT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::ok);
  set_password("new");
  EXPECT_EQ(check(auth, "alice@example.com", "right").result, LocalAuthResult::bad_credentials);
  EXPECT_EQ(check(auth, "alice@example.com", "new").result, LocalAuthResult::ok);
}

TEST_F(LocalAuthTest, RemovedAccountsAndAccountsWithoutPasswordFail) {
  LocalAuthenticator auth(*store_, pool_.get_executor(), {5min, 1ms, 10, 5min});
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
  LocalAuthenticator auth(*store_, pool_.get_executor(), {5min, 1ms, 3, 5min});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(check(auth, "alice@example.com", "wrong", "10.0.0.1").result,
              LocalAuthResult::bad_credentials);
  }
  EXPECT_EQ(check(auth, "alice@example.com", "right", "10.0.0.1").result,
            LocalAuthResult::rate_limited);
  EXPECT_EQ(check(auth, "alice@example.com", "right", "10.0.0.2").result, LocalAuthResult::ok)
      << "other addresses are unaffected";
}

}  // namespace
}  // namespace iop::auth
