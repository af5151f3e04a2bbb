#pragma once
// The Redis token cache. Redis is an optimisation, never a dependency: every failure here (down,
// slow, flushed, restarted, wrong password, garbage value) is a cache miss or a no-op, logged as a
// warning once per transition between healthy and unhealthy. The cache reconnects by itself with
// capped exponential backoff; while backing off, calls return at once without touching the
// network.
//
// Key schema: {prefix}token:{email} -> sealed JSON {access_token, expiry, refresh_token,
// refreshed_at_ms}, with a TTL ending no later than the access token's expiry, capped at 24 h;
// an entry whose refresh token is not in the database yet (its write failed) keeps the 24 h
// cap whatever the expiry, so the newest refresh token outlives the access token (issue #7).
// Refresh lock: {prefix}lock:{email} -> owner id, SET NX PX.
//
// Thread-safe; calls block for at most about the configured timeout (one connection, one mutex):
// callers on an I/O thread hop to a worker first.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/sealed.hpp"

namespace iop::storage {

struct RedisSettings {
  std::string url;  // redis://[:password@]host[:port][/db]
  std::string key_prefix = "imap-oauth2-proxy:";
  std::chrono::milliseconds timeout{250};
};

// Parsed form of RedisSettings::url.
struct RedisAddress {
  std::string host;
  int port = 6379;
  int db = 0;
  Secret password;
};
// Errc::config_error with the reason for anything but redis://[:password@]host[:port][/db].
Result<RedisAddress> parse_redis_url(std::string_view url);

// How long a token entry may stay in Redis.
enum class Retention {
  until_expiry,     // the access token is all the entry is good for: TTL ends at its expiry
  refresh_pending,  // the entry holds a refresh token the database does not have yet: 24 h
};

// The TTL for an entry expiring at `expiry` (unix s), stored at `now`: min(expiry - now, 24 h)
// for until_expiry (not positive when already expired), 24 h for refresh_pending. Pure.
std::chrono::milliseconds cache_ttl(std::int64_t expiry, SystemTime now, Retention retention);

struct CachedToken {
  Secret access_token;
  std::int64_t expiry = 0;  // unix seconds
  Secret refresh_token;     // may be empty
  std::int64_t refreshed_at_ms = 0;
};

class TokenCache {
 public:
  // Does not connect; the first call does. Fails only for a malformed URL.
  static Result<std::unique_ptr<TokenCache>> create(RedisSettings settings, MasterKey key);
  ~TokenCache();
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;

  std::optional<CachedToken> get(std::string_view email);
  // Stores with TTL = cache_ttl(token.expiry, now, retention); does nothing when that is not
  // positive. Returns whether Redis accepted it.
  bool put(std::string_view email, const CachedToken& token, SystemTime now,
           Retention retention = Retention::until_expiry);
  bool erase(std::string_view email);

  enum class Lock { acquired, held_elsewhere, unavailable };
  // SET {prefix}lock:{email} owner NX PX ttl.
  Lock try_lock(std::string_view email, std::string_view owner, std::chrono::milliseconds ttl);
  // Deletes the lock only if `owner` still holds it (compare-and-delete in a Lua script).
  void unlock(std::string_view email, std::string_view owner);
  // The value of the lock key (its holder's owner id, raw bytes: sanitize before logging);
  // nullopt when there is no lock or Redis is unavailable.
  std::optional<std::string> lock_owner(std::string_view email);
  // {prefix}lock:{email}, for log lines.
  [[nodiscard]] std::string lock_key(std::string_view email) const;

  // Whether the last call reached Redis.
  [[nodiscard]] bool healthy() const;

  struct Impl;

 private:
  explicit TokenCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iop::storage
