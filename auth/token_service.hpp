#pragma once
// The token service: ensure_fresh_token(email) gives a token good enough for its use, from the
// cheapest place that has one:
//   1. the in-process first level (an access token stays valid until its expiry whoever
//      refreshed it, so a small in-memory level in front of Redis is safe);
//   2. Redis (shared with other proxy instances; optional);
//   3. the SQLite credentials database, the source of truth, which re-fills Redis;
//   4. a refresh grant at the token endpoint, committed to the database before the token is
//      used or cached.
// Refreshes are single-flight: concurrent calls for one account share one request, and with
// Redis a lock extends that across processes. A refresh token is replaced only by a newer one,
// and only a permanent refusal (invalid_grant and its kin) marks an account needs_reauth; even
// then the old refresh token is kept until the account is authorized again.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth/token_endpoint.hpp"
#include "auth/token_policy.hpp"
#include "common/asio.hpp"
#include "common/clock.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/audit_log.hpp"
#include "storage/credentials_store.hpp"
#include "storage/token_cache.hpp"
#include "storage/token_source.hpp"

namespace iop::auth {

// The token service reports where a token came from in the connection log's own terms.
using storage::TokenSource;

// What the upstream login needs.
struct FreshToken {
  Secret secret;             // the access token, or the upstream password
  bool is_password = false;  // true for use_oauth = false accounts
  std::int64_t expiry = 0;   // unix seconds; 0 for a password
  std::int64_t refreshed_at_ms = 0;
  TokenSource source = TokenSource::database;
};

// How one account gets its tokens: its OAuth client (provider profile, tenant, client id and
// client credentials applied) and whether it is app-only (client-credentials grant, no refresh
// token).
struct AccountClient {
  OAuthClientSettings client;
  bool app_only = false;
};
using ClientResolver = std::function<Result<AccountClient>(const storage::Credentials&)>;

struct TokenServiceSettings {
  FreshnessPolicy freshness;
  // How long a first-level (in-process) entry may be served without looking at Redis or the
  // database again. Bounds how long a removed account's token can still be handed out.
  std::chrono::milliseconds memory_ttl{std::chrono::seconds(30)};
  // While the database cannot be read (a PostgreSQL restart) and Redis has nothing, a login may
  // still use the access token this instance last held for the account, past memory_ttl, while
  // the token itself is valid for the use and the entry is younger than this: the same bound as
  // the local-password record's fallback (storage::max_stale_login).
  std::chrono::milliseconds memory_stale_if_unreachable{std::chrono::minutes(15)};
  // The cross-process refresh lock's lifetime; longer than a refresh with all its retries.
  std::chrono::milliseconds lock_ttl{std::chrono::seconds(60)};
  // How long to wait for another instance's refresh before refreshing anyway. Shorter than a
  // mail client's patience at login: a lock key left by a dead or foreign process must not stall
  // logins for the lock's whole lifetime (app/services.cpp: min(lock_timeout, 10 s)).
  std::chrono::milliseconds lock_wait{std::chrono::seconds(10)};
  // Names this process in Redis locks.
  std::string instance_id;
  // The OAuth client of each account. Unset: the endpoint's own settings, refresh grants only.
  ClientResolver resolve_client;
  // Told of each refresh's outcome (refresh_ok; refresh_failed with the error class;
  // needs_reauth with the AADSTS code), for the connection log. Called on the refreshing
  // coroutine's thread: it must not block (an enqueue).
  std::function<void(storage::AuditEvent, const std::string& email, std::string detail)> on_event;
};

class TokenService {
 public:
  // `cache` may be null (no Redis). `blocking` runs database and Redis calls (a thread pool's
  // executor; never an I/O thread). The service keeps references: `store`, `cache` and
  // `endpoint` must outlive it.
  TokenService(storage::CredentialsStore& store, storage::TokenCache* cache,
               TokenEndpoint& endpoint, net::any_io_executor blocking,
               TokenServiceSettings settings, WallClock clock = system_wall_clock());

  // A token for `email` with enough life left for `use` (or the stored password of a
  // use_oauth = false account). Errors: Errc::invalid_argument (not an email), not_found,
  // needs_reauth (with the operator's next step), credentials_corrupt, storage_unavailable,
  // endpoint_unavailable, endpoint_bad_response. Suspends; runs on the caller's executor
  // between hops.
  awaitable<Result<FreshToken>> ensure_fresh_token(std::string email,
                                                   TokenUse use = TokenUse::session);

  // Forces a refresh (unless a concurrent caller's refresh, obtained after this call began,
  // can be shared). For a token the upstream rejected and for the background refresher.
  awaitable<Result<FreshToken>> refresh_now(std::string email);

  // Stores a new authorization (account add, account reauth): the row goes to the database
  // first, then to Redis and the first level, exactly like a refresh. The account's local
  // password hash and created_at are kept (CredentialsStore::upsert_account); a pending write of
  // an older refresh is dropped. `row` must stay alive until the call completes.
  awaitable<Result<void>> save_authorization(const storage::Credentials& row);

  // Drops the first-level entry, e.g. after the upstream rejected the token.
  void forget(const std::string& email);

  // Retries database writes that failed after a refresh. Returns how many are still pending.
  awaitable<std::size_t> retry_pending_writes();

  // For shutdown: retries the pending database writes until none is left or `window` has
  // passed, waiting between attempts (100 ms, doubling up to 1 s), then logs an error naming
  // each account whose rotated refresh token is still not persisted ("refresh token of X NOT
  // persisted: ..."). Returns those accounts. Suspends.
  awaitable<std::vector<std::string>> flush_pending_writes(std::chrono::milliseconds window);

  // How many refreshes wait for their database write.
  std::size_t pending_write_count();

  // Accounts asked for within `window`, most recent first.
  std::vector<std::string> accounts_used_within(std::chrono::steady_clock::duration window);

  [[nodiscard]] const TokenServiceSettings& settings() const { return settings_; }
  [[nodiscard]] storage::CredentialsStore& store() { return store_; }
  [[nodiscard]] net::any_io_executor blocking_executor() const { return blocking_; }

 private:
  struct Flight;
  struct MemoryEntry {
    Secret token;
    std::int64_t expiry = 0;
    std::int64_t refreshed_at_ms = 0;
    std::chrono::steady_clock::time_point stored_at;
  };
  struct Candidate;
  // A refresh whose database write failed, and why (for the shutdown report).
  struct PendingWrite {
    storage::TokenUpdate update;
    std::string last_error;
  };

  awaitable<Result<FreshToken>> obtain(std::string email, TokenNeed need);
  awaitable<Result<FreshToken>> lead(std::string email, TokenNeed need);
  awaitable<Result<FreshToken>> join(std::shared_ptr<Flight> flight);
  awaitable<Result<FreshToken>> load_or_refresh(const std::string& email, TokenNeed need,
                                                std::optional<storage::CachedToken> cached);
  awaitable<Result<FreshToken>> refresh_locked(const std::string& email, TokenNeed need,
                                               storage::Credentials row,
                                               std::optional<storage::CachedToken> cached);
  awaitable<Result<FreshToken>> refresh_with(const std::string& email,
                                             const storage::Credentials& row, Candidate candidate,
                                             TokenNeed need);
  // When `best`'s refresh token is not in the database: tries to write it there first; if that
  // fails and its access token is still usable, returns that token so no new refresh extends a
  // rotation chain only this process (or Redis) knows. nullopt: go on and refresh.
  awaitable<std::optional<FreshToken>> hold_unpersisted(const std::string& email, Candidate& best);
  // Writes `update` to the database. On failure keeps it in pending_writes_ (newest wins; a
  // rotated refresh token an older pending write holds is carried over) and returns false.
  awaitable<bool> persist(const std::string& email, storage::TokenUpdate& update);
  // Puts `entry` into Redis, with the longer retention when its refresh token is not in the
  // database (`persisted` false).
  awaitable<void> cache_put(const std::string& email, const storage::CachedToken& entry,
                            bool persisted);
  // One retry of every pending write; logs failures when `log_failures`. Returns how many are
  // still pending.
  awaitable<std::size_t> retry_pending_once(bool log_failures);
  // Waits for another instance's refresh to show up in Redis. Returns the token, or nullopt with
  // the lock now held by `owner` (acquired), or Redis gone (unavailable), or still held after
  // lock_wait (held_elsewhere).
  awaitable<std::pair<std::optional<FreshToken>, storage::TokenCache::Lock>>
  wait_for_other_instance(const std::string& email, const TokenNeed& need,
                          const std::string& owner);
  // Without the Redis lock: the account's refresh lock in the database (PostgreSQL), waited for up
  // to lock_wait. Null when the engine has none (SQLite), the server cannot be asked, or another
  // instance still holds it after lock_wait: then this one refreshes without it, and the
  // conditional write keeps the newest refresh token.
  awaitable<std::unique_ptr<storage::RefreshLock>> take_database_lock(const std::string& email);
  void emit(storage::AuditEvent event, const std::string& email, std::string detail) const;
  void complete(const std::string& email, const std::shared_ptr<Flight>& flight,
                const Result<FreshToken>& result);

  // `age_limit`: how old the entry may be (memory_ttl normally; memory_stale_if_unreachable
  // when the database cannot be read).
  std::optional<FreshToken> memory_lookup(const std::string& email, const TokenNeed& need,
                                          std::chrono::milliseconds age_limit);
  void memory_store(const std::string& email, const FreshToken& token);

  storage::CredentialsStore& store_;
  storage::TokenCache* cache_;
  TokenEndpoint& endpoint_;
  net::any_io_executor blocking_;
  TokenServiceSettings settings_;
  WallClock clock_;
  std::atomic<std::uint64_t> lock_counter_{0};

  std::mutex mutex_;  // guards everything below; never held across co_await
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
  std::unordered_map<std::string, MemoryEntry> memory_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> last_used_;
  // Refreshes whose database write failed: served and cached, retried until written.
  std::map<std::string, PendingWrite> pending_writes_;
};

// Runs `op` to completion on a private io_context (for the command line, not for I/O threads).
template <class T>
T run_blocking(std::function<awaitable<T>()> op) {
  net::io_context ioc;
  auto future = net::co_spawn(ioc, std::move(op), net::use_future);
  ioc.run();
  return future.get();
}

}  // namespace iop::auth
