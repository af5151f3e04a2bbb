// The Redis token cache against a real redis-server on loopback: round trips, sealing, TTLs,
// degraded mode (flushed, stopped, restarted, silent, wrong password), bad values and the
// refresh lock.

#include "storage/token_cache.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/log_capture.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::storage {
namespace {

using namespace std::chrono_literals;
using test::count_of;
using test::wait_until;

constexpr const char* alice = "alice@example.com";
constexpr const char* bob = "bob@example.com";
constexpr const char* alice_token_key = "test:token:alice@example.com";
constexpr const char* alice_lock_key = "test:lock:alice@example.com";

MasterKey key_of(char fill) {
  auto key = MasterKey::from_bytes(Secret(std::string(MasterKey::size, fill)));
  EXPECT_TRUE(key.has_value());
  return std::move(*key);
}

std::unique_ptr<TokenCache> make_cache(const std::string& url, char key_fill = 'k',
                                       std::chrono::milliseconds timeout = 250ms) {
  auto cache = TokenCache::create({url, "test:", timeout}, key_of(key_fill));
  EXPECT_TRUE(cache.has_value()) << (cache ? "" : cache.error().message);
  return cache ? std::move(*cache) : nullptr;
}

SystemTime now() { return std::chrono::system_clock::now(); }

CachedToken token_expiring_in(std::chrono::seconds left, std::string access = "at.alpha-123") {
  return CachedToken{Secret(std::move(access)), to_unix_seconds(now() + left),
                     Secret(std::string("rt.bravo-456")), to_unix_millis(now())};
}

class TokenCacheTest : public testing::Test {
 protected:
  test::RedisServer redis_;
  std::unique_ptr<TokenCache> cache_ = make_cache(redis_.url());
};

TEST_F(TokenCacheTest, PutThenGetRoundTrips) {
  const CachedToken token = token_expiring_in(1h);
  ASSERT_TRUE(cache_->put(alice, token, now()));
  const auto got = cache_->get(alice);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->access_token.reveal(), "at.alpha-123");
  EXPECT_EQ(got->expiry, token.expiry);
  EXPECT_EQ(got->refresh_token.reveal(), "rt.bravo-456");
  EXPECT_EQ(got->refreshed_at_ms, token.refreshed_at_ms);
  EXPECT_TRUE(cache_->healthy());
  EXPECT_EQ(redis_.keys("test:*"), std::vector<std::string>{alice_token_key});
  EXPECT_FALSE(cache_->get(bob).has_value());
}

TEST_F(TokenCacheTest, EmptyRefreshTokenRoundTrips) {
  CachedToken token = token_expiring_in(1h);
  token.refresh_token = Secret();
  ASSERT_TRUE(cache_->put(alice, token, now()));
  const auto got = cache_->get(alice);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->refresh_token.empty());
}

TEST_F(TokenCacheTest, ValueInRedisIsSealed) {
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  const std::string raw = redis_.raw_get(alice_token_key);
  ASSERT_FALSE(raw.empty());
  EXPECT_EQ(raw.find("at.alpha-123"), std::string::npos);
  EXPECT_EQ(raw.find("rt.bravo-456"), std::string::npos);
  EXPECT_EQ(raw.find("access_token"), std::string::npos);
}

TEST_F(TokenCacheTest, TtlEndsByTheTokenExpiry) {
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(10min), now()));
  const long long ttl = redis_.ttl_ms(alice_token_key);
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 10 * 60 * 1000);
  // Far from the cap: shows the TTL follows the expiry rather than a fixed value.
  EXPECT_GT(ttl, 5 * 60 * 1000);
}

TEST_F(TokenCacheTest, TtlIsCappedAt24Hours) {
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(72h), now()));
  const long long ttl = redis_.ttl_ms(alice_token_key);
  EXPECT_GT(ttl, 12LL * 3600 * 1000);
  EXPECT_LE(ttl, 24LL * 3600 * 1000);
}

TEST_F(TokenCacheTest, ExpiredTokenIsNotStored) {
  EXPECT_FALSE(cache_->put(alice, token_expiring_in(-1s), now()));
  EXPECT_FALSE(cache_->put(alice, token_expiring_in(-48h), now()));
  const SystemTime at = now();
  CachedToken now_token = token_expiring_in(0s);
  now_token.expiry = to_unix_seconds(at);  // expires within this very second
  EXPECT_FALSE(cache_->put(alice, now_token, at + 1s));
  EXPECT_EQ(redis_.ttl_ms(alice_token_key), -2);
  EXPECT_FALSE(cache_->get(alice).has_value());
}

TEST(TokenCacheTtl, PendingRefreshTokensKeepTheCapWhateverTheExpiry) {
  const SystemTime at = now();
  const auto expiry = to_unix_seconds(at + 10min);
  EXPECT_LE(cache_ttl(expiry, at, Retention::until_expiry), 10min);
  EXPECT_GT(cache_ttl(expiry, at, Retention::until_expiry), 9min);
  EXPECT_EQ(cache_ttl(expiry, at, Retention::refresh_pending), 24h);
  // Even an access token that has run out: the refresh token in the entry has not.
  EXPECT_LE(cache_ttl(to_unix_seconds(at - 1h), at, Retention::until_expiry), 0ms);
  EXPECT_EQ(cache_ttl(to_unix_seconds(at - 1h), at, Retention::refresh_pending), 24h);
  EXPECT_EQ(cache_ttl(to_unix_seconds(at + 72h), at, Retention::until_expiry), 24h);
}

TEST_F(TokenCacheTest, EntryWithAnUnpersistedRefreshTokenOutlivesItsAccessToken) {
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(10min), now(), Retention::refresh_pending));
  const long long ttl = redis_.ttl_ms(alice_token_key);
  EXPECT_GT(ttl, 12LL * 3600 * 1000);
  EXPECT_LE(ttl, 24LL * 3600 * 1000);
  // Stored even when the access token has expired: the refresh token is what matters.
  ASSERT_TRUE(cache_->put(bob, token_expiring_in(-1min), now(), Retention::refresh_pending));
  const auto got = cache_->get(bob);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->refresh_token.reveal(), "rt.bravo-456");
}

TEST_F(TokenCacheTest, LockOwnerReadsWhoHoldsTheLock) {
  EXPECT_FALSE(cache_->lock_owner(alice).has_value());
  ASSERT_EQ(cache_->try_lock(alice, "host-a:12:3", 10s), TokenCache::Lock::acquired);
  EXPECT_EQ(cache_->lock_owner(alice), std::optional<std::string>("host-a:12:3"));
  EXPECT_EQ(cache_->lock_key(alice), alice_lock_key);
}

TEST_F(TokenCacheTest, EraseRemovesTheValue) {
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  EXPECT_TRUE(cache_->erase(alice));
  EXPECT_FALSE(cache_->get(alice).has_value());
  EXPECT_TRUE(cache_->erase(alice));  // erasing nothing still reached Redis
}

TEST_F(TokenCacheTest, FlushallIsAMiss) {
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  redis_.flushall();
  EXPECT_FALSE(cache_->get(alice).has_value());
  EXPECT_TRUE(cache_->healthy());
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  EXPECT_TRUE(cache_->get(alice).has_value());
}

TEST_F(TokenCacheTest, StoppedRedisIsAMissThenRecoversWithoutANewCache) {
  test::LogCapture log;
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  redis_.stop();

  EXPECT_FALSE(cache_->get(alice).has_value());
  EXPECT_FALSE(cache_->healthy());
  EXPECT_FALSE(cache_->put(alice, token_expiring_in(1h), now()));
  EXPECT_FALSE(cache_->erase(alice));
  EXPECT_EQ(cache_->try_lock(alice, "owner-a", 10s), TokenCache::Lock::unavailable);
  cache_->unlock(alice, "owner-a");
  EXPECT_FALSE(cache_->healthy());

  // Several backoff rounds while it stays down: still one warning.
  const auto down_until = std::chrono::steady_clock::now() + 400ms;
  while (std::chrono::steady_clock::now() < down_until) {
    EXPECT_FALSE(cache_->get(alice).has_value());
    std::this_thread::sleep_for(20ms);
  }

  redis_.start();
  // Waits out the reconnect backoff without guessing its length.
  ASSERT_TRUE(wait_until([&] { return cache_->put(alice, token_expiring_in(1h), now()); }, 10s,
                         "a put to succeed once Redis is back"));
  EXPECT_TRUE(cache_->healthy());
  const auto got = cache_->get(alice);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->access_token.reveal(), "at.alpha-123");

  const std::string text = log.text();
  EXPECT_EQ(count_of(text, "unavailable"), 1u) << text;
  EXPECT_EQ(count_of(text, "reachable again"), 1u) << text;
  EXPECT_NE(text.find(std::to_string(redis_.port())), std::string::npos) << text;
  EXPECT_EQ(text.find("at.alpha-123"), std::string::npos);
}

TEST_F(TokenCacheTest, RestartBetweenCallsIsNotAnOutage) {
  test::LogCapture log;
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  redis_.stop();
  redis_.start();
  // The old connection is dead; the cache reconnects within the same call.
  EXPECT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  EXPECT_TRUE(cache_->healthy());
  EXPECT_FALSE(log.contains("unavailable")) << log.text();
}

TEST_F(TokenCacheTest, GarbageValueIsAMissAndDeleted) {
  test::LogCapture log;
  redis_.set_raw(alice_token_key, "not a sealed value");
  EXPECT_FALSE(cache_->get(alice).has_value());
  EXPECT_EQ(redis_.ttl_ms(alice_token_key), -2);
  EXPECT_TRUE(cache_->healthy());
  EXPECT_TRUE(log.contains("warn")) << log.text();
}

TEST_F(TokenCacheTest, SealedButMalformedValueIsAMissAndDeleted) {
  const MasterKey key = key_of('k');
  const std::string aad = std::string("redis:") + alice;
  for (
      const char* plain :
      {"not json", "[]", R"({"access_token":"at.secret-xyz"})",
       R"({"access_token":"at.secret-xyz","expiry":"soon","refresh_token":"","refreshed_at_ms":1})",
       R"({"access_token":7,"expiry":1,"refresh_token":"","refreshed_at_ms":1})"}) {
    test::LogCapture log;
    redis_.set_raw(alice_token_key, seal(key, Secret(std::string(plain)), aad));
    EXPECT_FALSE(cache_->get(alice).has_value()) << plain;
    EXPECT_EQ(redis_.ttl_ms(alice_token_key), -2) << plain;
    EXPECT_TRUE(log.contains("malformed")) << log.text();
    EXPECT_FALSE(log.contains("at.secret-xyz")) << log.text();
  }
}

TEST_F(TokenCacheTest, ValueOfAnotherAccountIsAMiss) {
  ASSERT_TRUE(cache_->put(bob, token_expiring_in(1h), now()));
  redis_.set_raw(alice_token_key, redis_.raw_get("test:token:bob@example.com"));
  EXPECT_FALSE(cache_->get(alice).has_value());
  EXPECT_EQ(redis_.ttl_ms(alice_token_key), -2);
  EXPECT_TRUE(cache_->get(bob).has_value());
}

TEST_F(TokenCacheTest, WrongMasterKeyIsAMiss) {
  ASSERT_TRUE(cache_->put(alice, token_expiring_in(1h), now()));
  auto other = make_cache(redis_.url(), 'x');
  EXPECT_FALSE(other->get(alice).has_value());
  EXPECT_TRUE(other->healthy());
  EXPECT_EQ(redis_.ttl_ms(alice_token_key), -2);
}

TEST_F(TokenCacheTest, LockIsExclusiveAndOnlyTheOwnerUnlocks) {
  EXPECT_EQ(cache_->try_lock(alice, "owner-a", 10s), TokenCache::Lock::acquired);
  EXPECT_EQ(cache_->try_lock(alice, "owner-b", 10s), TokenCache::Lock::held_elsewhere);
  EXPECT_EQ(cache_->try_lock(alice, "owner-a", 10s), TokenCache::Lock::held_elsewhere);
  EXPECT_EQ(cache_->try_lock(bob, "owner-b", 10s), TokenCache::Lock::acquired);
  const long long ttl = redis_.ttl_ms(alice_lock_key);
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 10'000);

  cache_->unlock(alice, "owner-b");
  EXPECT_EQ(redis_.raw_get(alice_lock_key), "owner-a");
  EXPECT_EQ(cache_->try_lock(alice, "owner-b", 10s), TokenCache::Lock::held_elsewhere);

  cache_->unlock(alice, "owner-a");
  EXPECT_EQ(redis_.ttl_ms(alice_lock_key), -2);
  EXPECT_EQ(cache_->try_lock(alice, "owner-b", 10s), TokenCache::Lock::acquired);
  EXPECT_TRUE(cache_->healthy());
}

TEST_F(TokenCacheTest, LockExpiresByItsTtl) {
  ASSERT_EQ(cache_->try_lock(alice, "owner-a", 50ms), TokenCache::Lock::acquired);
  EXPECT_LE(redis_.ttl_ms(alice_lock_key), 50);
  EXPECT_TRUE(wait_until(
      [&] { return cache_->try_lock(alice, "owner-b", 10s) == TokenCache::Lock::acquired; }, 10s,
      "the first owner's lock to expire"));
  // The first owner's late unlock must not release the second owner's lock.
  cache_->unlock(alice, "owner-a");
  EXPECT_EQ(redis_.raw_get(alice_lock_key), "owner-b");
}

TEST_F(TokenCacheTest, LockIsUnavailableWhenRedisIsDown) {
  redis_.stop();
  EXPECT_EQ(cache_->try_lock(alice, "owner-a", 10s), TokenCache::Lock::unavailable);
  EXPECT_EQ(cache_->try_lock(alice, "owner-a", 10s), TokenCache::Lock::unavailable);
  cache_->unlock(alice, "owner-a");
}

TEST_F(TokenCacheTest, SelectsTheDatabaseFromTheUrl) {
  auto db3 = make_cache(redis_.url() + "/3");
  ASSERT_TRUE(db3->put(alice, token_expiring_in(1h), now()));
  EXPECT_TRUE(db3->get(alice).has_value());
  // The fixture's helpers and cache_ use database 0.
  EXPECT_TRUE(redis_.keys("*").empty());
  EXPECT_FALSE(cache_->get(alice).has_value());
}

TEST_F(TokenCacheTest, ConcurrentCallsShareOneConnectionSafely) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string email = "user" + std::to_string(t) + "@example.com";
      for (int i = 0; i < 50; ++i) {
        const std::string access = "at." + std::to_string(t) + "." + std::to_string(i);
        if (!cache_->put(email, token_expiring_in(1h, access), now())) {
          ++failures;
          continue;
        }
        const auto got = cache_->get(email);
        if (!got || got->access_token.reveal() != access) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(redis_.keys("test:token:*").size(), 4u);
}

// A TCP listener that never accepts or answers: the kernel completes the handshake, so the
// cache connects and then waits for a reply that never comes.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 64), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // How many connections arrived so far (accepts and closes them).
  int drain() {
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    int n = 0;
    for (int c; (c = ::accept(fd_, nullptr, nullptr)) >= 0; ++n) {
      ::close(c);
    }
    return n;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(TokenCacheSilentPeer, TimesOutAndBacksOffWithoutReconnecting) {
  test::LogCapture log;
  SilentListener peer;
  auto cache = make_cache("redis://127.0.0.1:" + std::to_string(peer.port()), 'k', 50ms);
  constexpr int calls = 10;
  for (int i = 0; i < calls; ++i) {
    EXPECT_FALSE(cache->get(alice).has_value());
    EXPECT_FALSE(cache->healthy());
  }
  // The first call connected and timed out; the rest fell within the backoff and never
  // touched the network. (Robust slack: only a stall longer than the backoff adds one.)
  const int connections = peer.drain();
  EXPECT_GE(connections, 1);
  EXPECT_LE(connections, 3);
  EXPECT_TRUE(log.contains("timed out")) << log.text();
  EXPECT_EQ(count_of(log.text(), "unavailable"), 1u) << log.text();
}

TEST(TokenCachePassword, AuthWorksAndAWrongPasswordIsAMiss) {
  test::RedisServer redis("pw-Correct-Horse");
  auto good = make_cache(redis.url());
  ASSERT_TRUE(good->put(alice, token_expiring_in(1h), now()));
  EXPECT_TRUE(good->get(alice).has_value());
  EXPECT_TRUE(good->healthy());

  test::LogCapture log;
  const std::string base = "127.0.0.1:" + std::to_string(redis.port());
  auto wrong = make_cache("redis://:not-the-password@" + base);
  EXPECT_FALSE(wrong->get(alice).has_value());
  EXPECT_FALSE(wrong->put(alice, token_expiring_in(1h), now()));
  EXPECT_FALSE(wrong->healthy());
  EXPECT_TRUE(log.contains("unavailable")) << log.text();
  EXPECT_FALSE(log.contains("not-the-password")) << log.text();

  auto none = make_cache("redis://" + base);
  EXPECT_FALSE(none->get(alice).has_value());
  EXPECT_FALSE(none->healthy());

  auto with_user = make_cache("redis://default:pw-Correct-Horse@" + base);
  EXPECT_TRUE(with_user->get(alice).has_value());
}

TEST(TokenCacheCreate, RejectsABadUrlAndDoesNotConnect) {
  auto bad = TokenCache::create({"http://localhost", "test:", 250ms}, key_of('k'));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, Errc::config_error);

  // Nothing listens on this port; create() still succeeds because it does not connect.
  auto lazy = TokenCache::create(
      {"redis://127.0.0.1:" + std::to_string(test::free_port()), "test:", 250ms}, key_of('k'));
  ASSERT_TRUE(lazy.has_value());
  EXPECT_FALSE((*lazy)->get(alice).has_value());
  EXPECT_FALSE((*lazy)->healthy());
}

}  // namespace
}  // namespace iop::storage
