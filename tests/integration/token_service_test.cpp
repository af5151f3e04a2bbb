// The token service against real peers: redis-server and the test token endpoint on loopback,
// and a real database: each TokenServiceTest runs on SQLite and on PostgreSQL (issue #10).

#include "auth/token_service.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "app/config.hpp"
#include "app/services.hpp"
#include "auth/refresher.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/log_capture.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_db.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run_coro.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::auth {
namespace {

using namespace std::chrono_literals;
using storage::AccountStatus;
using storage::Credentials;
using test::run_coro;
using test::wait_until;

std::int64_t now_s() { return to_unix_seconds(std::chrono::system_clock::now()); }
std::int64_t now_ms() { return to_unix_millis(std::chrono::system_clock::now()); }

constexpr const char* fail_updates_sql =
    "CREATE TRIGGER fail_updates BEFORE UPDATE ON mail_credentials BEGIN "
    "SELECT RAISE(ABORT, 'simulated disk failure'); END;";

void exec_sql(const std::filesystem::path& db, const std::string& sql) {
  test::RawDb(db).exec(sql);
}

class TokenServiceTest : public ::testing::TestWithParam<test::Engine> {
 protected:
  void SetUp() override {
    if (auto why = test::engine_unavailable(GetParam())) {
      GTEST_SKIP() << *why;
    }
    key_ = storage::MasterKey::create(dir_.path() / "master.key").value();
    db_.emplace(GetParam(), dir_.path());
    store_ = db_->open_store(*key_).value();
    cache_ = storage::TokenCache::create({redis_.url(), "test:", 250ms}, *key_).value();
    OAuthClientSettings oauth;
    oauth.token_endpoint = peer_.token_url();
    oauth.client_id = "test-client";
    oauth.http.timeout = 5s;
    oauth.backoff = BackoffPolicy{3, 10ms, 50ms};
    endpoint_ = std::make_unique<TokenEndpoint>(oauth, pool_.get_executor());
    make_service(true);
  }

  void TearDown() override { pool_.join(); }

  void make_service(bool with_redis, std::chrono::milliseconds memory_ttl = 0ms,
                    std::chrono::milliseconds lock_wait = 5s,
                    WallClock clock = system_wall_clock()) {
    TokenServiceSettings s;
    s.memory_ttl = memory_ttl;
    s.instance_id = "test";
    s.lock_wait = lock_wait;
    service_ =
        std::make_unique<TokenService>(*store_, with_redis ? cache_.get() : nullptr, *endpoint_,
                                       pool_.get_executor(), s, std::move(clock));
  }

  // An OAuth account known to the endpoint, with an access token expiring at `expiry`.
  std::string seed(const std::string& email, std::int64_t expiry) {
    const auto refresh_token = peer_.add_account(email);
    Credentials row;
    row.email = email;
    row.use_oauth = true;
    row.access_token = Secret("at.seeded." + email);
    row.refresh_token = Secret(refresh_token);
    row.token_expiry = expiry;
    row.refreshed_at_ms = now_ms() - 1000;
    EXPECT_TRUE(store_->upsert_account(row).has_value());
    return refresh_token;
  }

  Result<FreshToken> get(const std::string& email, TokenUse use = TokenUse::session) {
    return run_coro<Result<FreshToken>>(
        [this, email, use] { return service_->ensure_fresh_token(email, use); });
  }

  int requests_for(const std::string& email) {
    const auto stats = peer_.stats();
    return stats["per_account"].contains(email) ? stats["per_account"][email].get<int>() : 0;
  }

  test::TempDir dir_;
  std::optional<test::TestDatabase> db_;
  test::RedisServer redis_;
  test::TokenEndpointPeer peer_;
  std::optional<storage::MasterKey> key_;
  std::unique_ptr<storage::CredentialsStore> store_;
  std::unique_ptr<storage::TokenCache> cache_;
  net::thread_pool pool_{4};
  std::unique_ptr<TokenEndpoint> endpoint_;
  std::unique_ptr<TokenService> service_;
};

TEST_P(TokenServiceTest, RedisHitIsServedWithoutReadingTheDatabase) {
  seed("alice@example.com", now_s() + 7200);
  ASSERT_TRUE(cache_->put("alice@example.com",
                          {Secret("at.from-redis"), now_s() + 7200, Secret("rt.x"), now_ms()},
                          std::chrono::system_clock::now()));
  // Without a database row, only Redis can answer.
  ASSERT_TRUE(store_->remove("alice@example.com").value());
  const auto token = get("alice@example.com");
  ASSERT_TRUE(token.has_value()) << token.error().message;
  EXPECT_EQ(token->secret.reveal(), "at.from-redis");
  EXPECT_EQ(token->source, TokenSource::redis);
  EXPECT_EQ(requests_for("alice@example.com"), 0);
}

TEST_P(TokenServiceTest, MemoryLevelAnswersRepeatedCalls) {
  make_service(true, 30s);
  seed("alice@example.com", now_s() + 7200);
  EXPECT_EQ(get("alice@example.com")->source, TokenSource::database);
  redis_.stop();  // the first level does not need Redis or the database
  ASSERT_TRUE(store_->remove("alice@example.com").value());
  const auto token = get("alice@example.com");
  ASSERT_TRUE(token.has_value());
  EXPECT_EQ(token->source, TokenSource::memory);
  EXPECT_EQ(token->secret.reveal(), "at.seeded.alice@example.com");
}

TEST_P(TokenServiceTest, RedisMissFallsBackToTheDatabaseAndRefillsRedis) {
  test::LogCapture log;
  seed("bob@example.com", now_s() + 7200);
  redis_.flushall();
  const auto first = get("bob@example.com");
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(first->source, TokenSource::database);
  EXPECT_EQ(first->secret.reveal(), "at.seeded.bob@example.com");
  EXPECT_TRUE(log.contains("Recovered credentials from database and cached in Redis"));
  EXPECT_FALSE(redis_.raw_get("test:token:bob@example.com").empty());
  const auto second = get("bob@example.com");
  EXPECT_EQ(second->source, TokenSource::redis);
  EXPECT_EQ(requests_for("bob@example.com"), 0);
  EXPECT_FALSE(log.contains("at.seeded")) << "a token reached the log";
}

TEST_P(TokenServiceTest, NearExpiryRefreshesAndCommitsToTheDatabaseFirst) {
  test::LogCapture log;
  const auto old_refresh = seed("carol@example.com", now_s() + 60);
  const auto token = get("carol@example.com");
  ASSERT_TRUE(token.has_value()) << token.error().message;
  EXPECT_EQ(token->source, TokenSource::refresh);
  EXPECT_GE(token->expiry, now_s() + 3000);
  EXPECT_EQ(requests_for("carol@example.com"), 1);

  const auto row = store_->get("carol@example.com").value();
  EXPECT_EQ(row.access_token.reveal(), token->secret.reveal());
  EXPECT_EQ(row.token_expiry, token->expiry);
  EXPECT_NE(row.refresh_token.reveal(), old_refresh) << "the rotated refresh token is stored";
  EXPECT_TRUE(peer_.check(row.refresh_token.reveal())["valid"].get<bool>());
  EXPECT_TRUE(log.contains("Token for carol@example.com persisted to database"));

  const auto cached = cache_->get("carol@example.com");
  ASSERT_TRUE(cached.has_value());
  EXPECT_EQ(cached->access_token.reveal(), token->secret.reveal());
  EXPECT_EQ(cached->refresh_token.reveal(), row.refresh_token.reveal());
  const auto text = log.text();
  EXPECT_EQ(text.find(token->secret.reveal()), std::string::npos);
  EXPECT_EQ(text.find(row.refresh_token.reveal()), std::string::npos);
  EXPECT_EQ(text.find(old_refresh), std::string::npos);
}

TEST_P(TokenServiceTest, SessionsGetTokensWithAtLeastTheMinimumLifetime) {
  seed("dave@example.com", now_s() + 30 * 60);  // 30 min left: enough now, not for a session
  const auto immediate = get("dave@example.com", TokenUse::immediate);
  ASSERT_TRUE(immediate.has_value());
  EXPECT_EQ(immediate->source, TokenSource::database);
  EXPECT_EQ(requests_for("dave@example.com"), 0);
  const auto session = get("dave@example.com", TokenUse::session);
  ASSERT_TRUE(session.has_value());
  EXPECT_EQ(session->source, TokenSource::refresh);
  EXPECT_GE(session->expiry - now_s(), 45 * 60);
}

TEST_P(TokenServiceTest, FailedDatabaseWriteStillServesAndRetriesTheWrite) {
  test::LogCapture log;
  peer_.configure({{"rotation", "revoke_immediately"}});
  const auto old_refresh = seed("erin@example.com", now_s() - 10);
  db_->fail_updates(true);
  const auto token = get("erin@example.com");
  ASSERT_TRUE(token.has_value()) << token.error().message;
  EXPECT_EQ(token->source, TokenSource::refresh);
  EXPECT_TRUE(log.contains("Error persisting tokens to database"));
  EXPECT_EQ(store_->get("erin@example.com")->refresh_token.reveal(), old_refresh);
  // The new refresh token lives in Redis meanwhile.
  const auto cached = cache_->get("erin@example.com");
  ASSERT_TRUE(cached.has_value());
  EXPECT_TRUE(peer_.check(cached->refresh_token.reveal())["valid"].get<bool>());
  EXPECT_FALSE(peer_.check(old_refresh)["valid"].get<bool>());

  // With the database still failing and Redis gone, a forced refresh must not rotate again from
  // a refresh token only memory holds while the access token still works: it serves that one
  // (and puts the newest refresh token back into Redis).
  redis_.flushall();
  const auto again =
      run_coro<Result<FreshToken>>([this] { return service_->refresh_now("erin@example.com"); });
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(again->secret.reveal(), token->secret.reveal());
  EXPECT_EQ(requests_for("erin@example.com"), 1);
  EXPECT_TRUE(log.contains("not refreshing erin@example.com"));
  ASSERT_TRUE(cache_->get("erin@example.com").has_value());
  EXPECT_EQ(run_coro<std::size_t>([this] { return service_->retry_pending_writes(); }), 1u);

  db_->fail_updates(false);
  EXPECT_EQ(run_coro<std::size_t>([this] { return service_->retry_pending_writes(); }), 0u);
  const auto row = store_->get("erin@example.com").value();
  EXPECT_EQ(row.access_token.reveal(), again->secret.reveal());
  EXPECT_TRUE(peer_.check(row.refresh_token.reveal())["valid"].get<bool>());
  EXPECT_EQ(row.status, AccountStatus::active);
}

TEST_P(TokenServiceTest, ConcurrentCallsShareOneRefresh) {
  seed("frank@example.com", now_s() - 10);
  peer_.configure({{"delay_ms", 300}});
  const auto results = test::run_concurrently<Result<FreshToken>>(
      200, 2, [this](int) { return service_->ensure_fresh_token("frank@example.com"); });
  ASSERT_EQ(results.size(), 200u);
  for (const auto& r : results) {
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->secret.reveal(), results.front()->secret.reveal());
  }
  EXPECT_EQ(requests_for("frank@example.com"), 1);
  EXPECT_EQ(peer_.stats()["max_in_flight"].get<int>(), 1);
}

TEST_P(TokenServiceTest, TwoServicesSharingRedisRefreshOnce) {
  // A second instance: its own database connection, Redis connection and workers.
  auto store2 = db_->open_store(*key_).value();
  auto cache2 = storage::TokenCache::create({redis_.url(), "test:", 250ms}, *key_).value();
  net::thread_pool pool2{2};
  TokenServiceSettings s;
  s.memory_ttl = 0ms;
  s.instance_id = "second";
  TokenService service2(*store2, cache2.get(), *endpoint_, pool2.get_executor(), s);

  seed("grace@example.com", now_s() - 10);
  peer_.configure({{"delay_ms", 300}});
  const auto results = test::run_concurrently<Result<FreshToken>>(40, 2, [&](int i) {
    return (i % 2 == 0 ? *service_ : service2).ensure_fresh_token("grace@example.com");
  });
  for (const auto& r : results) {
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->secret.reveal(), results.front()->secret.reveal());
  }
  EXPECT_EQ(requests_for("grace@example.com"), 1);
  pool2.join();
}

TEST_P(TokenServiceTest, ThreeInstancesSharingOnlyTheDatabaseRefreshOnce) {
  if (GetParam() == test::Engine::sqlite) {
    GTEST_SKIP() << "SQLite has no cross-instance refresh lock: instances on one machine share "
                    "Redis for that (the conditional write still keeps the newest token)";
  }
  // Three instances with no Redis: each its own database connections and workers. Issue #10:
  // 300 simultaneous calls for one expired account, spread over the three, refresh once.
  struct Instance {
    std::unique_ptr<storage::CredentialsStore> store;
    net::thread_pool pool{2};
    std::unique_ptr<TokenService> service;
  };
  // Whatever the database's default isolation: under REPEATABLE READ a write that waited for
  // the row's lock would read the row as it was before the wait (the review's finding), and
  // the refreshed token's write would fail to serialize.
  db_->exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation "
            "= ''repeatable read''', current_database()); END $$");
  std::vector<std::unique_ptr<Instance>> instances;
  for (int i = 0; i < 3; ++i) {
    auto in = std::make_unique<Instance>();
    in->store = db_->open_store(*key_).value();
    TokenServiceSettings s;
    s.instance_id = "instance" + std::to_string(i);
    in->service =
        std::make_unique<TokenService>(*in->store, nullptr, *endpoint_, in->pool.get_executor(), s);
    instances.push_back(std::move(in));
  }
  seed("hana@example.com", now_s() - 10);
  peer_.configure({{"delay_ms", 300}});
  const auto results = test::run_concurrently<Result<FreshToken>>(300, 3, [&](int i) {
    return instances[static_cast<std::size_t>(i % 3)]->service->ensure_fresh_token(
        "hana@example.com");
  });
  for (const auto& r : results) {
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->secret.reveal(), results.front()->secret.reveal());
  }
  EXPECT_EQ(requests_for("hana@example.com"), 1);
  const auto row = store_->get("hana@example.com").value();
  EXPECT_EQ(row.access_token.reveal(), results.front()->secret.reveal());
  EXPECT_TRUE(peer_.check(row.refresh_token.reveal())["valid"].get<bool>());
  for (auto& in : instances) in->pool.join();
}

TEST_P(TokenServiceTest, InvalidGrantMarksOnlyThatAccountAndKeepsItsRefreshToken) {
  const auto revoked = seed("heidi@example.com", now_s() - 10);
  seed("ivan@example.com", now_s() - 10);
  peer_.revoke("heidi@example.com");
  ASSERT_TRUE(cache_->put("heidi@example.com",
                          {Secret("at.stale"), now_s() + 20, Secret(revoked), now_ms() - 5000},
                          std::chrono::system_clock::now()));
  const auto token = get("heidi@example.com");
  ASSERT_FALSE(token.has_value());
  EXPECT_EQ(token.error().code, Errc::needs_reauth);
  EXPECT_NE(token.error().message.find("imap-oauth2-proxy account reauth heidi@example.com"),
            std::string::npos);
  EXPECT_NE(token.error().message.find("AADSTS50173"), std::string::npos);
  const auto row = store_->get("heidi@example.com").value();
  EXPECT_EQ(row.status, AccountStatus::needs_reauth);
  EXPECT_EQ(row.refresh_token.reveal(), revoked);
  EXPECT_FALSE(cache_->get("heidi@example.com").has_value());
  // No retry storm: the next call answers from the database status.
  EXPECT_EQ(get("heidi@example.com").error().code, Errc::needs_reauth);
  EXPECT_EQ(requests_for("heidi@example.com"), 1);
  EXPECT_TRUE(get("ivan@example.com").has_value());
}

TEST_P(TokenServiceTest, TransientFailuresChangeNothingStored) {
  const auto refresh = seed("judy@example.com", now_s() - 10);
  peer_.add_faults(
      nlohmann::json::array({{{"status", 503}}, {{"status", 503}}, {{"status", 503}}}));
  const auto token = get("judy@example.com");
  ASSERT_FALSE(token.has_value());
  EXPECT_EQ(token.error().code, Errc::endpoint_unavailable);
  const auto row = store_->get("judy@example.com").value();
  EXPECT_EQ(row.refresh_token.reveal(), refresh);
  EXPECT_EQ(row.status, AccountStatus::active);
  EXPECT_TRUE(get("judy@example.com").has_value()) << "works once the endpoint recovers";
}

TEST_P(TokenServiceTest, BadEndpointAnswersAreTypedErrorsAndChangeNothing) {
  const auto refresh = seed("ken@example.com", now_s() - 10);
  const nlohmann::json faults[] = {
      {{"kind", "malformed"}},
      {{"kind", "no_access_token"}},
      {{"kind", "bad_expires_in"}, {"expires_in", -5}},
      {{"kind", "bad_expires_in"}, {"expires_in", 1e12}},
      {{"kind", "bad_expires_in"}, {"expires_in", "soon"}},
      {{"kind", "error_200"}},
  };
  for (const auto& fault : faults) {
    peer_.add_faults(nlohmann::json::array({fault}));
    const auto token = get("ken@example.com");
    ASSERT_FALSE(token.has_value()) << fault.dump();
    EXPECT_NE(token.error().code, Errc::internal) << fault.dump();
    const auto row = store_->get("ken@example.com").value();
    EXPECT_EQ(row.refresh_token.reveal(), refresh) << fault.dump();
    EXPECT_EQ(row.status, AccountStatus::active) << fault.dump();
  }
}

TEST_P(TokenServiceTest, PasswordAccountsGetTheirStoredPassword) {
  Credentials row;
  row.email = "legacy@example.com";
  row.use_oauth = false;
  row.password = Secret("upstream-pass");
  ASSERT_TRUE(store_->upsert_account(row).has_value());
  const auto token = get("Legacy@Example.com");
  ASSERT_TRUE(token.has_value());
  EXPECT_TRUE(token->is_password);
  EXPECT_EQ(token->secret.reveal(), "upstream-pass");
  EXPECT_EQ(token->source, TokenSource::password);
  EXPECT_EQ(peer_.stats()["total"].get<int>(), 0);
}

TEST_P(TokenServiceTest, RejectsWhatIsNotAnEmailAndUnknownAccounts) {
  EXPECT_EQ(get("not an email").error().code, Errc::invalid_argument);
  EXPECT_EQ(get("nobody@example.com").error().code, Errc::not_found);
}

TEST_P(TokenServiceTest, StoredRefreshTokenWithControlCharactersIsNeverSent) {
  Credentials row;
  row.email = "odd@example.com";
  row.refresh_token = Secret(std::string("rt.abc\r\nX-Injected: 1"));
  row.token_expiry = now_s() - 10;
  ASSERT_TRUE(store_->upsert_account(row).has_value());
  const auto token = get("odd@example.com");
  ASSERT_FALSE(token.has_value());
  EXPECT_EQ(token.error().code, Errc::endpoint_bad_response);
  EXPECT_EQ(peer_.stats()["total"].get<int>(), 0);
  EXPECT_EQ(store_->get("odd@example.com")->status, AccountStatus::active);
}

TEST_P(TokenServiceTest, CorruptedRowBreaksOnlyThatAccount) {
  seed("good@example.com", now_s() + 7200);
  seed("bad@example.com", now_s() + 7200);
  redis_.flushall();
  // Another row's ciphertext copied in: authentic bytes, wrong place.
  db_->exec(
      "UPDATE mail_credentials SET refresh_token = (SELECT refresh_token FROM "
      "mail_credentials WHERE email = 'good@example.com') WHERE email = 'bad@example.com';");
  const auto bad = get("bad@example.com");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, Errc::credentials_corrupt);
  EXPECT_TRUE(get("good@example.com").has_value());
}

TEST_P(TokenServiceTest, RedisFlushedOrKilledMidRunLosesNothing) {
  seed("lena@example.com", now_s() + 7200);
  int failures = 0;
  for (int i = 0; i < 60; ++i) {
    if (i == 20) redis_.flushall();
    if (i == 30) redis_.stop();
    if (i == 45) redis_.start();
    if (!get("lena@example.com").has_value()) ++failures;
  }
  EXPECT_EQ(failures, 0);
  // Back: Redis is re-filled by the next calls once the cache's backoff has passed.
  bool served = true;
  const bool refilled = wait_until(
      [&] {
        served = get("lena@example.com").has_value();
        return !served || !redis_.raw_get("test:token:lena@example.com").empty();
      },
      10s, "the token back in Redis");
  ASSERT_TRUE(served);
  EXPECT_TRUE(refilled);
  EXPECT_EQ(requests_for("lena@example.com"), 0);
}

TEST_P(TokenServiceTest, WorksWithoutRedisAtAll) {
  make_service(false);
  seed("mike@example.com", now_s() - 10);
  const auto token = get("mike@example.com");
  ASSERT_TRUE(token.has_value()) << token.error().message;
  EXPECT_EQ(token->source, TokenSource::refresh);
  EXPECT_EQ(get("mike@example.com")->source, TokenSource::database);
}

TEST_P(TokenServiceTest, BackgroundRefresherKeepsUsedAndIdleAccountsAlive) {
  seed("used@example.com", now_s() + 40 * 60);  // in use, will not last a session
  seed("idle@example.com", now_s() + 7200);     // not in use, refreshed recently
  seed("old@example.com", now_s() + 7200);      // not in use, last refresh 8 days ago
  const auto revoked = seed("gone@example.com", now_s() + 7200);  // idle for 8 days, revoked
  db_->exec("UPDATE mail_credentials SET refreshed_at_ms = refreshed_at_ms - " +
            std::to_string(8LL * 24 * 3600 * 1000) +
            " WHERE email IN ('old@example.com', 'gone@example.com');");
  peer_.revoke("gone@example.com");
  ASSERT_TRUE(get("used@example.com", TokenUse::immediate).has_value());

  Refresher refresher(*service_, RefresherSettings{60s, std::chrono::hours(24 * 7), 2h});
  const auto pass = run_coro<RefreshPass>([&refresher] { return refresher.run_once(); });
  EXPECT_EQ(pass.refreshed, 2);
  EXPECT_EQ(pass.failed, 1);
  EXPECT_EQ(requests_for("used@example.com"), 1);
  EXPECT_EQ(requests_for("old@example.com"), 1);
  EXPECT_EQ(requests_for("idle@example.com"), 0);
  EXPECT_EQ(store_->get("gone@example.com")->status, AccountStatus::needs_reauth);
  EXPECT_EQ(store_->get("gone@example.com")->refresh_token.reveal(), revoked);
  EXPECT_GE(store_->get("used@example.com")->token_expiry, now_s() + 50 * 60);

  const auto second = run_coro<RefreshPass>([&refresher] { return refresher.run_once(); });
  EXPECT_EQ(second.refreshed, 0);
  EXPECT_EQ(second.failed, 0) << "an account needing re-authorization is not retried";
}

// Issue #7, item 7: while the database refuses the write of a refresh, the rotated refresh token
// outlives the access token in Redis, is not rotated again while the access token still works,
// and a next process (here: a new service with a later clock) finds it there.
TEST_P(TokenServiceTest, UnpersistedRefreshTokenOutlivesItsAccessTokenAndIsNotRotatedAgain) {
  test::LogCapture log;
  peer_.configure({{"rotation", "revoke_on_use"}, {"expires_in", 600}});
  const std::string email = "olga@example.com";
  const auto stored_refresh = seed(email, now_s() - 10);
  db_->fail_updates(true);
  const auto token = get(email, TokenUse::immediate);
  ASSERT_TRUE(token.has_value()) << token.error().message;
  EXPECT_EQ(token->source, TokenSource::refresh);
  EXPECT_EQ(requests_for(email), 1);

  // (b) The Redis copy holds the new refresh token for longer than the access token lives.
  const auto cached = cache_->get(email);
  ASSERT_TRUE(cached.has_value());
  EXPECT_NE(cached->refresh_token.reveal(), stored_refresh);
  EXPECT_GT(redis_.ttl_ms("test:token:" + email), 12LL * 3600 * 1000);

  // (c) Neither a session's need (45 min > the 10 min left) nor a forced refresh rotates again:
  // the current access token is served, and the stored refresh token still works because its
  // successor was never presented.
  const auto for_session = get(email, TokenUse::session);
  ASSERT_TRUE(for_session.has_value()) << for_session.error().message;
  EXPECT_EQ(for_session->secret.reveal(), token->secret.reveal());
  const auto forced =
      run_coro<Result<FreshToken>>([this, email] { return service_->refresh_now(email); });
  ASSERT_TRUE(forced.has_value()) << forced.error().message;
  EXPECT_EQ(forced->secret.reveal(), token->secret.reveal());
  EXPECT_EQ(requests_for(email), 1);
  EXPECT_TRUE(log.contains("not refreshing " + email));
  EXPECT_TRUE(peer_.check(stored_refresh)["valid"].get<bool>());

  // A next process, after the access token has run out, database still failing: only Redis has
  // the newest refresh token, and it refreshes from it.
  const auto later = std::chrono::system_clock::now() + 1h;
  make_service(true, 0ms, 5s, [later] { return later; });
  const auto next = get(email, TokenUse::immediate);
  ASSERT_TRUE(next.has_value()) << next.error().message;
  EXPECT_EQ(next->source, TokenSource::refresh);
  EXPECT_EQ(requests_for(email), 2);
  EXPECT_TRUE(log.contains("refreshing " + email + " from a refresh token that is not in the"));
  EXPECT_FALSE(peer_.check(stored_refresh)["valid"].get<bool>()) << "its successor was used";

  db_->fail_updates(false);
  EXPECT_EQ(run_coro<std::size_t>([this] { return service_->retry_pending_writes(); }), 0u);
  const auto row = store_->get(email).value();
  EXPECT_EQ(row.access_token.reveal(), next->secret.reveal());
  EXPECT_TRUE(peer_.check(row.refresh_token.reveal())["valid"].get<bool>());
  EXPECT_EQ(row.status, AccountStatus::active);
  EXPECT_FALSE(log.contains(row.refresh_token.reveal())) << "a token reached the log";
}

TEST_P(TokenServiceTest, ShutdownFlushNamesEveryAccountLeftUnpersisted) {
  test::LogCapture log;
  peer_.configure({{"rotation", "revoke_on_use"}});
  seed("paul@example.com", now_s() - 10);
  seed("rita@example.com", now_s() + 7200);  // nothing pending for her
  db_->fail_updates(true);
  ASSERT_TRUE(get("paul@example.com").has_value());
  ASSERT_TRUE(get("rita@example.com").has_value());
  EXPECT_EQ(service_->pending_write_count(), 1u);

  const auto lost =
      run_coro<std::vector<std::string>>([this] { return service_->flush_pending_writes(300ms); });
  EXPECT_EQ(lost, std::vector<std::string>{"paul@example.com"});
  const auto text = log.text();
  EXPECT_NE(text.find("error refresh token of paul@example.com NOT persisted: "), std::string::npos)
      << text;
  EXPECT_NE(text.find("simulated disk failure"), std::string::npos) << text;
  EXPECT_EQ(text.find("rita@example.com NOT persisted"), std::string::npos);

  // Writable again within the window: persisted, and nobody named.
  db_->fail_updates(false);
  EXPECT_TRUE(run_coro<std::vector<std::string>>([this] {
                return service_->flush_pending_writes(300ms);
              }).empty());
  EXPECT_EQ(service_->pending_write_count(), 0u);
  EXPECT_TRUE(
      peer_.check(store_->get("paul@example.com")->refresh_token.reveal())["valid"].get<bool>());
}

// Issue #7, item 9: a lock key nobody will release (written by hand here) is named in the log
// once, and the wait is bounded by lock_wait.
TEST_P(TokenServiceTest, ForeignRedisLockIsLoggedAndWaitedForOnlyUpToLockWait) {
  test::LogCapture log;
  make_service(true, 0ms, 300ms);
  seed("quinn@example.com", now_s() - 10);
  redis_.set_raw("test:lock:quinn@example.com", "other-host:4242:7");
  const auto token = get("quinn@example.com");
  ASSERT_TRUE(token.has_value()) << token.error().message;
  EXPECT_EQ(token->source, TokenSource::refresh);
  const auto text = log.text();
  EXPECT_EQ(test::count_of(text, "refresh of quinn@example.com waits up to 300 ms"), 1u) << text;
  EXPECT_NE(text.find("Redis key test:lock:quinn@example.com is held by 'other-host:4242:7'"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("still held by 'other-host:4242:7' after"), std::string::npos) << text;
  EXPECT_NE(text.find("refreshing without it"), std::string::npos) << text;
}

TEST_P(TokenServiceTest, UnprintableLockOwnerIsSanitized) {
  test::LogCapture log;
  make_service(true, 0ms, 100ms);
  seed("sam@example.com", now_s() - 10);
  redis_.set_raw("test:lock:sam@example.com", "x\r\nerror FORGED log line");
  ASSERT_TRUE(get("sam@example.com").has_value());
  const auto text = log.text();
  // The CR LF shows as the four characters \r\n (common/sanitize.hpp): no forged line.
  EXPECT_EQ(text.find("\nerror FORGED"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(is held by 'x\r\nerror FORGED log line')"), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Engines, TokenServiceTest,
                         ::testing::Values(test::Engine::sqlite, test::Engine::postgresql),
                         [](const auto& info) { return test::to_string(info.param); });

// Issue #7, item 6, through the real wiring (app/services): with as many refreshes hanging at
// the token endpoint as the blocking pool has threads, a login whose token is in Redis still
// completes while they are in flight.
TEST(ServicesTest, SlowTokenEndpointCallsDoNotDelayLoginsThatNeedNoRefresh) {
  test::TempDir dir;
  test::RedisServer redis;
  test::TokenEndpointPeer peer;
  auto config =
      app::load_config(test::write_cli_config(dir.path(), {peer.token_url(), redis.url(), "", ""}));
  ASSERT_TRUE(config.has_value()) << config.error().message;
  auto made = app::make_services(std::move(*config));
  ASSERT_TRUE(made.has_value()) << made.error().message;
  auto& services = **made;
  // lock_timeout is 30 s by default: a login never waits that long for another instance.
  EXPECT_EQ(services.tokens->settings().lock_wait, 10s);

  auto save = [&](const std::string& email, std::int64_t expiry) {
    Credentials row;
    row.email = email;
    row.use_oauth = true;
    row.access_token = Secret("at.saved." + email);
    row.refresh_token = Secret(peer.add_account(email));
    row.token_expiry = expiry;
    row.refreshed_at_ms = now_ms() - 1000;
    const auto saved = run_coro<Result<void>>(
        [&services, &row] { return services.tokens->save_authorization(row); });
    ASSERT_TRUE(saved.has_value()) << saved.error().message;
  };
  constexpr int slow = 4;  // the blocking pool's size: what used to stall everything
  for (int i = 0; i < slow; ++i) {
    const auto email = "slow" + std::to_string(i) + "@example.com";
    save(email, now_s() - 10);
    peer.add_faults(nlohmann::json::array({{{"kind", "delay"}, {"ms", 3000}}}), email);
  }
  save("cached@example.com", now_s() + 7200);
  services.tokens->forget("cached@example.com");  // from Redis, through the blocking pool

  net::io_context slow_ioc;
  std::mutex mutex;
  std::vector<Result<FreshToken>> slow_results;
  for (int i = 0; i < slow; ++i) {
    net::co_spawn(slow_ioc,
                  services.tokens->ensure_fresh_token("slow" + std::to_string(i) + "@example.com"),
                  [&](std::exception_ptr e, Result<FreshToken> r) {
                    std::lock_guard lock(mutex);
                    if (e) {
                      r = fail(Errc::internal, "the refresh threw");
                    }
                    slow_results.push_back(std::move(r));
                  });
  }
  std::thread runner([&slow_ioc] { slow_ioc.run(); });
  const bool all_waiting =
      wait_until([&peer] { return peer.stats()["in_flight"].get<int>() == slow; }, 20s,
                 "the slow refreshes all in flight at the endpoint");
  const auto cached = run_coro<Result<FreshToken>>(
      [&services] { return services.tokens->ensure_fresh_token("cached@example.com"); });
  const int in_flight_after = peer.stats()["in_flight"].get<int>();
  runner.join();

  ASSERT_TRUE(all_waiting) << "the slow refreshes never all reached the endpoint";
  ASSERT_TRUE(cached.has_value()) << cached.error().message;
  EXPECT_EQ(cached->source, TokenSource::redis);
  EXPECT_EQ(in_flight_after, slow) << "the cached login waited for the slow refreshes";
  ASSERT_EQ(slow_results.size(), static_cast<std::size_t>(slow));
  for (const auto& r : slow_results) {
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->source, TokenSource::refresh);
  }
}

// Issue #7, item 7 (a), through the binary: `serve` refreshes (keepalive) while the database
// refuses the write; SIGTERM; the database becomes writable during the retry window; the
// rotated refresh token ends up in the database.
TEST(ServeShutdownTest, PendingTokenWriteIsRetriedAndPersistedAtShutdown) {
  test::TempDir dir;
  test::TokenEndpointPeer peer;
  peer.configure({{"rotation", "revoke_on_use"}});
  const int port = test::free_port();
  const auto config = test::write_cli_config(
      dir.path(), {peer.token_url(), "", "",
                   "[server]\nlisten_tls = \"127.0.0.1:" + std::to_string(port) + "\"\n"});
  const std::string email = "tina@example.com";
  const auto added = test::run_cli(config, {"account", "add", email, "--refresh-token-stdin"},
                                   peer.add_account(email) + "\n");
  ASSERT_EQ(added.exit_code, 0) << added.err;
  const auto db = dir.path() / "data/credentials.db";
  const auto before = test::open_cli_store(dir.path()).value()->get(email).value();
  // Last refreshed 8 days ago: the background refresher's first pass refreshes it (keepalive).
  exec_sql(db, "UPDATE mail_credentials SET refreshed_at_ms = refreshed_at_ms - " +
                   std::to_string(8LL * 24 * 3600 * 1000) + ";");
  exec_sql(db, fail_updates_sql);

  const auto log_path = dir.path() / "serve.log";
  auto proxy = test::start_serve(config, log_path);
  ASSERT_TRUE(wait_until(
      [&] {
        return test::read_file(log_path).find("Error persisting tokens to database for " + email) !=
               std::string::npos;
      },
      20s, "the failed database write in the log"))
      << test::read_file(log_path);
  proxy.signal(SIGTERM);
  ASSERT_TRUE(wait_until(
      [&] {
        return test::read_file(log_path).find("not yet in the database; retrying the write") !=
               std::string::npos;
      },
      20s, "the shutdown retry in the log"))
      << test::read_file(log_path);
  exec_sql(db, "DROP TRIGGER fail_updates;");
  EXPECT_EQ(proxy.wait(30s), std::optional<int>(0));

  const auto log = test::read_file(log_path);
  EXPECT_NE(log.find("Token for " + email + " persisted to database (after an earlier failure)"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("NOT persisted"), std::string::npos) << log;
  const auto row = test::open_cli_store(dir.path()).value()->get(email).value();
  EXPECT_NE(row.refresh_token.reveal(), before.refresh_token.reveal());
  EXPECT_TRUE(peer.check(row.refresh_token.reveal())["valid"].get<bool>());
  EXPECT_EQ(log.find(row.refresh_token.reveal()), std::string::npos) << "a token reached the log";
}

}  // namespace
}  // namespace iop::auth
