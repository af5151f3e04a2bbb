#include "auth/token_service.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <utility>

#include "auth/aadsts.hpp"
#include "common/blocking.hpp"
#include "common/email.hpp"
#include "common/sanitize.hpp"

namespace iop::auth {

using storage::CachedToken;
using storage::Credentials;
using storage::TokenCache;

// One refresh (or database load) in progress for one account, shared by every concurrent caller.
struct TokenService::Flight {
  bool done = false;
  Result<FreshToken> result;
  std::vector<std::move_only_function<void(Result<FreshToken>)>> waiters;
};

// The newest tokens known for an account, wherever they were found.
struct TokenService::Candidate {
  Secret access_token;
  std::int64_t expiry = 0;
  Secret refresh_token;
  std::int64_t refreshed_at_ms = 0;
  // Whether refresh_token is the one in the database. False for a refresh whose database write
  // failed (here: a pending write; elsewhere: found only in Redis).
  bool persisted = true;
  TokenSource source = TokenSource::database;
};

namespace {

// An event's detail for a failed grant: the error class, the OAuth error and the AADSTS code
// (what an operator looks up), never the endpoint's free text.
std::string grant_failure_detail(const TokenError& e) {
  std::string out(to_string(e.kind));
  if (!e.error.empty()) {
    out += " " + e.error;
  }
  if (e.aadsts != 0) {
    out += " AADSTS" + std::to_string(e.aadsts);
  }
  if (e.http_status != 0) {
    out += " (HTTP " + std::to_string(e.http_status) + ")";
  }
  return out;
}

std::string reauth_message(std::string_view email, std::string_view reason) {
  // A reason from the endpoint's classifier already names the command (name_account()).
  if (reason.find("imap-oauth2-proxy account reauth") != std::string_view::npos) {
    return fmt::format("account {} needs re-authorization: {}", email, reason);
  }
  return fmt::format(
      "account {} needs re-authorization{}{}: run 'imap-oauth2-proxy account reauth {}'", email,
      reason.empty() ? "" : " (", reason.empty() ? std::string{} : std::string(reason) + ")",
      email);
}

// Waits between polls for another instance's refresh: short at first, then capped.
std::chrono::milliseconds poll_delay(int attempt) {
  return std::chrono::milliseconds(std::min(20 << std::min(attempt, 4), 250));
}

// An access token with less than this left is not worth serving instead of refreshing.
constexpr std::int64_t usable_seconds = 60;

// A Redis lock value for a log line. Ours are "host:pid:n"; anyone with access to Redis can
// write anything there, so it goes through the one log sanitizer (issue #7, item 2).
std::string printable_owner(const std::optional<std::string>& owner) {
  if (!owner) {
    return "(gone, or Redis unavailable)";
  }
  return fmt::format("'{}'", sanitize_for_log(*owner, 100));
}

}  // namespace

TokenService::TokenService(storage::CredentialsStore& store, storage::TokenCache* cache,
                           TokenEndpoint& endpoint, net::any_io_executor blocking,
                           TokenServiceSettings settings, WallClock clock)
    : store_(store),
      cache_(cache),
      endpoint_(endpoint),
      blocking_(std::move(blocking)),
      settings_(std::move(settings)),
      clock_(std::move(clock)) {}

awaitable<Result<FreshToken>> TokenService::ensure_fresh_token(std::string email, TokenUse use) {
  IOP_CO_TRY_ASSIGN(auto normalized, normalize_email(email));
  co_return co_await obtain(std::move(normalized), need_for(settings_.freshness, use));
}

awaitable<Result<FreshToken>> TokenService::refresh_now(std::string email) {
  IOP_CO_TRY_ASSIGN(auto normalized, normalize_email(email));
  const TokenNeed need{std::chrono::seconds(0), to_unix_millis(clock_())};
  co_return co_await obtain(std::move(normalized), need);
}

void TokenService::forget(const std::string& email) {
  std::lock_guard lock(mutex_);
  memory_.erase(email);
}

std::vector<std::string> TokenService::accounts_used_within(
    std::chrono::steady_clock::duration window) {
  const auto since = std::chrono::steady_clock::now() - window;
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::string>> used;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [email, at] : last_used_) {
      if (at >= since) {
        used.emplace_back(at, email);
      }
    }
  }
  std::sort(used.begin(), used.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  out.reserve(used.size());
  for (auto& entry : used) {
    out.push_back(std::move(entry.second));
  }
  return out;
}

awaitable<Result<FreshToken>> TokenService::obtain(std::string email, TokenNeed need) {
  {
    std::lock_guard lock(mutex_);
    last_used_[email] = std::chrono::steady_clock::now();
  }
  if (auto hit = memory_lookup(email, need, settings_.memory_ttl)) {
    co_return std::move(*hit);
  }
  std::optional<CachedToken> cached;
  if (cache_ != nullptr) {
    cached = co_await run_on_pool(blocking_, [this, &email] { return cache_->get(email); });
    if (cached && satisfies(need, cached->expiry, cached->refreshed_at_ms, clock_())) {
      FreshToken token{cached->access_token, false, cached->expiry, cached->refreshed_at_ms,
                       TokenSource::redis};
      memory_store(email, token);
      co_return token;
    }
  }

  // A flight may have been started for a weaker need than ours (a token for immediate use while
  // we need one for a session); then we look again, at most a few times.
  Result<FreshToken> result = fail(Errc::internal, "no token obtained");
  for (int round = 0; round < 3; ++round) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
      std::lock_guard lock(mutex_);
      auto& slot = flights_[email];
      if (!slot) {
        slot = std::make_shared<Flight>();
        leader = true;
      }
      flight = slot;
    }
    if (leader) {
      try {
        result = co_await load_or_refresh(email, need, std::move(cached));
      } catch (const std::exception& e) {
        spdlog::error("token service: unexpected failure for {}: {}", email, e.what());
        result =
            fail(Errc::internal, fmt::format("internal error while getting a token for {}", email));
      }
      if (!result && result.error().code == Errc::storage_unavailable) {
        // The database cannot be read (and Redis had nothing): the token this instance last
        // held, if still valid for this use, rather than a failed login. Never after an
        // answer that the token is bad (that erases the entry) or once the entry is older than
        // memory_stale_if_unreachable.
        if (auto last = memory_lookup(email, need, settings_.memory_stale_if_unreachable)) {
          spdlog::warn(
              "token service: {}; using the access token this instance last held for {} "
              "(valid for another {} s)",
              result.error().message, email, last->expiry - to_unix_seconds(clock_()));
          result = std::move(*last);
        }
      }
      complete(email, flight, result);
      co_return result;
    }
    result = co_await join(std::move(flight));  // moved: see docs/design.md (GCC 12)
    if (!result || result->is_password ||
        satisfies(need, result->expiry, result->refreshed_at_ms, clock_())) {
      co_return result;
    }
    cached.reset();
  }
  co_return result;
}

void TokenService::complete(const std::string& email, const std::shared_ptr<Flight>& flight,
                            const Result<FreshToken>& result) {
  std::vector<std::move_only_function<void(Result<FreshToken>)>> waiters;
  {
    std::lock_guard lock(mutex_);
    flight->done = true;
    flight->result = result;
    waiters.swap(flight->waiters);
    auto it = flights_.find(email);
    if (it != flights_.end() && it->second == flight) {
      flights_.erase(it);
    }
  }
  for (auto& waiter : waiters) {
    waiter(result);
  }
}

awaitable<Result<FreshToken>> TokenService::join(std::shared_ptr<Flight> flight) {
  auto initiate = [this, flight](auto handler) {
    // Keep the waiter's executor busy while it waits, and resume it there.
    auto ex = net::prefer(net::get_associated_executor(handler),
                          net::execution::outstanding_work.tracked);
    auto deliver = [ex, h = std::move(handler)](Result<FreshToken> r) mutable {
      net::post(ex, [h = std::move(h), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
    };
    std::unique_lock lock(mutex_);
    if (flight->done) {
      auto r = flight->result;
      lock.unlock();
      deliver(std::move(r));
      return;
    }
    flight->waiters.emplace_back(std::move(deliver));
  };
  co_return co_await net::async_initiate<const net::use_awaitable_t<>&, void(Result<FreshToken>)>(
      std::move(initiate), net::use_awaitable);
}

std::optional<FreshToken> TokenService::memory_lookup(const std::string& email,
                                                      const TokenNeed& need,
                                                      std::chrono::milliseconds age_limit) {
  std::lock_guard lock(mutex_);
  auto it = memory_.find(email);
  if (it == memory_.end()) {
    return std::nullopt;
  }
  // An entry past memory_ttl stays (one per account used) for the fallback in obtain().
  if (std::chrono::steady_clock::now() - it->second.stored_at > age_limit) {
    return std::nullopt;
  }
  const auto& entry = it->second;
  if (!satisfies(need, entry.expiry, entry.refreshed_at_ms, clock_())) {
    return std::nullopt;
  }
  return FreshToken{entry.token, false, entry.expiry, entry.refreshed_at_ms, TokenSource::memory};
}

void TokenService::memory_store(const std::string& email, const FreshToken& token) {
  if (token.is_password || settings_.memory_ttl.count() <= 0) {
    return;
  }
  std::lock_guard lock(mutex_);
  auto& entry = memory_[email];
  // Never replace a newer token with an older one.
  if (entry.refreshed_at_ms > token.refreshed_at_ms) {
    return;
  }
  entry = MemoryEntry{token.secret, token.expiry, token.refreshed_at_ms,
                      std::chrono::steady_clock::now()};
}

awaitable<Result<FreshToken>> TokenService::load_or_refresh(const std::string& email,
                                                            TokenNeed need,
                                                            std::optional<CachedToken> cached) {
  auto row = co_await run_on_pool(blocking_, [this, &email] { return store_.get(email); });
  if (!row) {
    if (row.error().code == Errc::credentials_corrupt) {
      spdlog::error("credentials of {} cannot be read: {}", email, row.error());
    }
    co_return std::unexpected(row.error());
  }
  if (!row->use_oauth) {
    if (row->password.empty()) {
      co_return fail(Errc::credentials_corrupt,
                     fmt::format("account {} uses a password upstream but none is stored", email));
    }
    co_return FreshToken{row->password, true, 0, 0, TokenSource::password};
  }
  if (row->status == storage::AccountStatus::needs_reauth) {
    co_return fail(Errc::needs_reauth, reauth_message(email, row->status_reason));
  }
  co_return co_await refresh_locked(email, need, std::move(*row), std::move(cached));
}

awaitable<Result<FreshToken>> TokenService::refresh_locked(const std::string& email, TokenNeed need,
                                                           Credentials row,
                                                           std::optional<CachedToken> cached) {
  // The newest tokens we know: the database row, a refresh whose database write failed, or a
  // Redis entry written by a refresh whose database write failed elsewhere.
  auto newest = [this, &email](const Credentials& r, const std::optional<CachedToken>& c) {
    Candidate best{r.access_token, r.token_expiry, r.refresh_token, r.refreshed_at_ms};
    {
      std::lock_guard lock(mutex_);
      auto it = pending_writes_.find(email);
      if (it != pending_writes_.end() && it->second.update.refreshed_at_ms > best.refreshed_at_ms) {
        const auto& p = it->second.update;
        // Without a rotated refresh token the pending write holds only an access token: the
        // refresh token in use is still the stored one.
        best = Candidate{p.access_token,
                         p.token_expiry,
                         p.refresh_token ? *p.refresh_token : best.refresh_token,
                         p.refreshed_at_ms,
                         !p.refresh_token.has_value(),
                         TokenSource::memory};
      }
    }
    if (c && c->refreshed_at_ms > best.refreshed_at_ms && !c->refresh_token.empty()) {
      best = Candidate{c->access_token,
                       c->expiry,
                       c->refresh_token,
                       c->refreshed_at_ms,
                       c->refresh_token == r.refresh_token,
                       TokenSource::redis};
    }
    return best;
  };
  auto serve_stored = [&](const Candidate& best) -> awaitable<FreshToken> {
    FreshToken token{best.access_token, false, best.expiry, best.refreshed_at_ms,
                     TokenSource::database};
    if (!best.persisted) {
      // A refresh token only memory or Redis holds (a failed write, here or in a process that
      // has since stopped): try the database again, and keep it pending if that fails.
      storage::TokenUpdate update{best.access_token, best.expiry, best.refresh_token,
                                  best.refreshed_at_ms};
      co_await persist(email, update);
    }
    if (cache_ != nullptr) {
      CachedToken entry{best.access_token, best.expiry, best.refresh_token, best.refreshed_at_ms};
      bool persisted = best.persisted;
      if (!persisted) {
        std::lock_guard lock(mutex_);
        persisted = !pending_writes_.contains(email);
      }
      if (best.source == TokenSource::database) {
        const bool stored = co_await run_on_pool(
            blocking_, [this, &email, &entry] { return cache_->put(email, entry, clock_()); });
        if (stored) {
          spdlog::info("Recovered credentials from database and cached in Redis (account {})",
                       email);
        }
      } else {
        co_await cache_put(email, entry, persisted);
      }
    }
    memory_store(email, token);
    co_return token;
  };

  Candidate best = newest(row, cached);
  if (satisfies(need, best.expiry, best.refreshed_at_ms, clock_())) {
    co_return co_await serve_stored(best);
  }

  // Refresh needed. With Redis, take the cross-process lock so one instance refreshes.
  auto lock = TokenCache::Lock::unavailable;
  std::string owner;
  if (cache_ != nullptr) {
    owner = fmt::format("{}:{}", settings_.instance_id, ++lock_counter_);
    lock = co_await run_on_pool(blocking_, [this, &email, &owner] {
      return cache_->try_lock(email, owner, settings_.lock_ttl);
    });
    if (lock == TokenCache::Lock::held_elsewhere) {
      auto [token, now_lock] = co_await wait_for_other_instance(email, need, owner);
      if (token) {
        memory_store(email, *token);
        co_return std::move(*token);
      }
      lock = now_lock;  // acquired, or refresh without it (Redis gone, or the holder is stuck)
    }
  }

  // Without the Redis lock (no Redis, Redis down, or its holder stuck past lock_wait),
  // instances that share a PostgreSQL database take the lock there (issue #10).
  std::unique_ptr<storage::RefreshLock> db_lock;
  if (lock != TokenCache::Lock::acquired) {
    db_lock = co_await take_database_lock(email);
  }

  // From here on the lock may be ours: every path, exceptions included, releases it.
  std::exception_ptr failure;
  Result<FreshToken> result = fail(Errc::internal, "no token obtained");
  try {
    bool reread_ok = true;
    if (cache_ != nullptr || db_lock != nullptr) {
      // Another instance may have refreshed between our read and the lock: the database
      // decides. Redis holds a newer refresh token than the database only when a database
      // write failed after a refresh (here or elsewhere): then that one is the token to use.
      auto again = co_await run_on_pool(blocking_, [this, &email] { return store_.get(email); });
      if (!again) {
        result = std::unexpected(again.error());
        reread_ok = false;
      } else {
        row = std::move(*again);
        if (cache_ != nullptr) {
          cached = co_await run_on_pool(blocking_, [this, &email] { return cache_->get(email); });
        }
        best = newest(row, cached);
      }
    }
    if (!reread_ok) {
      // result holds the error
    } else if (row.status == storage::AccountStatus::needs_reauth) {
      result = fail(Errc::needs_reauth, reauth_message(email, row.status_reason));
    } else if (satisfies(need, best.expiry, best.refreshed_at_ms, clock_())) {
      result = co_await serve_stored(best);
    } else if (auto held = co_await hold_unpersisted(email, best)) {
      result = std::move(*held);
    } else {
      result = co_await refresh_with(email, row, std::move(best), need);
    }
  } catch (...) {
    failure = std::current_exception();
  }
  if (lock == TokenCache::Lock::acquired) {
    co_await run_on_pool(blocking_, [this, &email, &owner] { cache_->unlock(email, owner); });
  }
  if (db_lock != nullptr) {
    co_await run_on_pool(blocking_, [&db_lock] { db_lock.reset(); });  // the unlock is a query
  }
  if (failure) {
    std::rethrow_exception(failure);
  }
  co_return result;
}

awaitable<std::unique_ptr<storage::RefreshLock>> TokenService::take_database_lock(
    const std::string& email) {
  using State = storage::RefreshLockAttempt::State;
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + settings_.lock_wait;
  net::steady_timer timer(co_await net::this_coro::executor);
  for (int attempt = 0;; ++attempt) {
    auto got =
        co_await run_on_pool(blocking_, [this, &email] { return store_.try_refresh_lock(email); });
    if (!got) {
      spdlog::warn("refresh of {}: its database lock cannot be taken ({}); refreshing without it",
                   email, got.error());
      co_return nullptr;
    }
    if (got->state != State::held_elsewhere) {
      co_return std::move(got->lock);  // acquired, or null: the engine has none
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      spdlog::warn(
          "refresh of {}: another instance still holds its database lock after {} ms; "
          "refreshing without it",
          email,
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                started)
              .count());
      co_return nullptr;
    }
    if (attempt == 0) {
      spdlog::info("refresh of {} waits up to {} ms for another instance's refresh (database lock)",
                   email, settings_.lock_wait.count());
    }
    timer.expires_after(poll_delay(attempt));
    co_await timer.async_wait(net::use_awaitable);
  }
}

awaitable<std::pair<std::optional<FreshToken>, TokenCache::Lock>>
TokenService::wait_for_other_instance(const std::string& email, const TokenNeed& need,
                                      const std::string& owner) {
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + settings_.lock_wait;
  // Whoever holds the lock, the wait shows in the log: a lock key left by a dead process or
  // written by someone else would otherwise stall logins without a word (issue #7, item 9).
  const auto holder = printable_owner(
      co_await run_on_pool(blocking_, [this, &email] { return cache_->lock_owner(email); }));
  spdlog::warn("refresh of {} waits up to {} ms for another refresh: Redis key {} is held by {}",
               email, settings_.lock_wait.count(), cache_->lock_key(email), holder);
  net::steady_timer timer(co_await net::this_coro::executor);
  auto lock = TokenCache::Lock::held_elsewhere;
  for (int attempt = 0; std::chrono::steady_clock::now() < deadline; ++attempt) {
    timer.expires_after(poll_delay(attempt));
    co_await timer.async_wait(net::use_awaitable);
    auto cached = co_await run_on_pool(blocking_, [this, &email] { return cache_->get(email); });
    if (cached && satisfies(need, cached->expiry, cached->refreshed_at_ms, clock_())) {
      co_return std::pair{
          std::optional<FreshToken>(FreshToken{cached->access_token, false, cached->expiry,
                                               cached->refreshed_at_ms, TokenSource::redis}),
          lock};
    }
    // No usable token yet: is the other instance still at it? When its lock is gone (done
    // without a usable token, failed, or died), take over.
    lock = co_await run_on_pool(blocking_, [this, &email, &owner] {
      return cache_->try_lock(email, owner, settings_.lock_ttl);
    });
    if (lock != TokenCache::Lock::held_elsewhere) {
      break;
    }
  }
  if (lock == TokenCache::Lock::held_elsewhere) {
    spdlog::warn("refresh of {}: Redis key {} still held by {} after {} ms; refreshing without it",
                 email, cache_->lock_key(email), holder,
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - started)
                     .count());
  }
  co_return std::pair{std::optional<FreshToken>{}, lock};
}

awaitable<Result<FreshToken>> TokenService::refresh_with(const std::string& email,
                                                         const Credentials& row, Candidate best,
                                                         TokenNeed need) {
  AccountClient client{endpoint_.settings(), false};
  if (settings_.resolve_client) {
    IOP_CO_TRY_ASSIGN(auto resolved, settings_.resolve_client(row));
    client = std::move(resolved);
  }
  if (!client.app_only && best.refresh_token.empty()) {
    co_return fail(Errc::needs_reauth, reauth_message(email, "no refresh token is stored"));
  }
  // Moved named copies, never copies made inside the co_await (GCC 12, docs/design.md).
  Secret presented = best.refresh_token;
  std::string for_log = email;
  // Two statements, not a conditional expression: GCC 12 mishandles temporaries of co_await
  // operands (docs/design.md).
  std::expected<TokenGrant, TokenError> grant = std::unexpected(TokenError{});
  if (client.app_only) {
    grant = co_await endpoint_.client_credentials(client.client, std::move(for_log));
  } else {
    grant = co_await endpoint_.refresh(client.client, std::move(presented), std::move(for_log));
  }
  const auto now = clock_();
  if (!grant) {
    const auto& e = grant.error();
    if (e.kind == GrantFailure::permanent) {
      auto error = to_error(e);
      error.message = name_account(error.message, email);
      // Refused because another process (without the Redis lock) has rotated it meanwhile? Then
      // the stored token is newer and the account is fine: do not lock it out.
      auto current = co_await run_on_pool(blocking_, [this, &email] { return store_.get(email); });
      if (current && current->refreshed_at_ms > best.refreshed_at_ms) {
        spdlog::warn(
            "refresh for {} refused ({}), but a newer refresh token is stored; not "
            "marking the account",
            email, error.message);
        co_return fail(Errc::endpoint_unavailable,
                       fmt::format("refresh for {} raced with another process; try again", email));
      }
      // Keep the refresh token for inspection; only the status changes.
      auto marked = co_await run_on_pool(blocking_, [this, &email, &error] {
        return store_.mark_needs_reauth(email, error.message);
      });
      if (!marked) {
        spdlog::error("could not mark {} as needing re-authorization: {}", email, marked.error());
      }
      if (cache_ != nullptr) {
        co_await run_on_pool(blocking_, [this, &email] { return cache_->erase(email); });
      }
      forget(email);
      emit(storage::AuditEvent::needs_reauth, email, grant_failure_detail(e));
      spdlog::error("account {} needs re-authorization: {}", email, error.message);
      co_return fail(Errc::needs_reauth, reauth_message(email, error.message));
    }
    // Transient, bad answer or our configuration: nothing stored changes. A token that is still
    // valid for a while is better than no token, unless it is the one the caller needs replaced.
    emit(storage::AuditEvent::refresh_failed, email, grant_failure_detail(e));
    if (may_serve_after_failed_refresh(need, best.expiry, best.refreshed_at_ms, now)) {
      spdlog::warn("refresh for {} failed ({}); serving the current token until it is due", email,
                   to_error(e));
      co_return FreshToken{best.access_token, false, best.expiry, best.refreshed_at_ms,
                           TokenSource::database};
    }
    co_return std::unexpected(to_error(e));
  }

  storage::TokenUpdate update{
      grant->access_token, to_unix_seconds(now) + grant->expires_in.count(), grant->refresh_token,
      // Strictly newer than what it replaces, even if the clock stepped back.
      std::max(to_unix_millis(now), best.refreshed_at_ms + 1)};
  if (!update.refresh_token && !best.persisted) {
    // Not rotated this time, and the one presented is not in the database: it goes with this
    // write, or it would be lost.
    update.refresh_token = best.refresh_token;
  }
  // The database first: a crash after this line loses nothing.
  const bool persisted = co_await persist(email, update);
  emit(storage::AuditEvent::refresh_ok, email,
       std::string(client.app_only ? "client credentials" : "refresh token") +
           (update.refresh_token ? ", rotated" : "") +
           (persisted ? "" : ", database write pending"));

  Secret refresh_token = update.refresh_token ? *update.refresh_token : best.refresh_token;
  FreshToken token{update.access_token, false, update.token_expiry, update.refreshed_at_ms,
                   TokenSource::refresh};
  if (cache_ != nullptr) {
    CachedToken entry{update.access_token, update.token_expiry, std::move(refresh_token),
                      update.refreshed_at_ms};
    co_await cache_put(email, entry, persisted);
  }
  memory_store(email, token);
  co_return token;
}

awaitable<std::optional<FreshToken>> TokenService::hold_unpersisted(const std::string& email,
                                                                    Candidate& best) {
  if (best.persisted) {
    co_return std::nullopt;
  }
  // Its refresh token exists only in memory or Redis: the endpoint may already have revoked
  // the one the database holds (revoke on use). Refreshing from it again would leave the
  // database two rotations behind, and a process that stops now loses the account. Write it
  // first; while the database refuses, keep serving the access token it came with (issue #7,
  // item 7).
  storage::TokenUpdate update{best.access_token, best.expiry, best.refresh_token,
                              best.refreshed_at_ms};
  if (co_await persist(email, update)) {
    best.persisted = true;
    co_return std::nullopt;
  }
  const auto left = best.expiry - to_unix_seconds(clock_());
  if (left > usable_seconds) {
    spdlog::warn(
        "not refreshing {}: its refresh token is not in the database yet (the write keeps "
        "failing); serving the current access token ({} s left) instead",
        email, left);
    if (cache_ != nullptr) {
      // Redis may have lost it (flushed, restarted): it is the copy a next process finds.
      CachedToken entry{best.access_token, best.expiry, best.refresh_token, best.refreshed_at_ms};
      co_await cache_put(email, entry, false);
    }
    FreshToken token{best.access_token, false, best.expiry, best.refreshed_at_ms, best.source};
    memory_store(email, token);
    co_return token;
  }
  spdlog::warn(
      "refreshing {} from a refresh token that is not in the database yet: the access token "
      "has run out and the database write keeps failing",
      email);
  co_return std::nullopt;
}

awaitable<bool> TokenService::persist(const std::string& email, storage::TokenUpdate& update) {
  auto written = co_await run_on_pool(
      blocking_, [this, &email, &update] { return store_.update_tokens(email, update); });
  std::lock_guard lock(mutex_);
  if (!written) {
    auto& pending = pending_writes_[email];
    const bool first = pending.update.refreshed_at_ms == 0;
    if (pending.update.refreshed_at_ms < update.refreshed_at_ms) {
      if (!update.refresh_token && pending.update.refresh_token) {
        // Keep a rotated refresh token an earlier failed write still holds.
        update.refresh_token = pending.update.refresh_token;
      }
      pending.update = update;
    }
    pending.last_error = written.error().message;
    if (first) {
      spdlog::error(
          "Error persisting tokens to database for {}: {}; serving the new token, keeping it in "
          "memory and Redis, and retrying the write",
          email, written.error());
    }
    co_return false;
  }
  if (*written) {
    spdlog::info("Token for {} persisted to database", email);
  } else {
    spdlog::warn("Token for {} not persisted: the database already holds newer tokens", email);
  }
  auto it = pending_writes_.find(email);
  if (it != pending_writes_.end() && it->second.update.refreshed_at_ms <= update.refreshed_at_ms) {
    pending_writes_.erase(it);
  }
  co_return true;
}

awaitable<void> TokenService::cache_put(const std::string& email, const CachedToken& entry,
                                        bool persisted) {
  // Until the database has it, Redis may hold the only copy of the newest refresh token that
  // outlives this process: keep it past the access token's expiry (storage/token_cache.hpp).
  const auto retention =
      persisted ? storage::Retention::until_expiry : storage::Retention::refresh_pending;
  co_await run_on_pool(blocking_, [this, &email, &entry, retention] {
    return cache_->put(email, entry, clock_(), retention);
  });
}

awaitable<Result<void>> TokenService::save_authorization(const Credentials& row) {
  IOP_CO_TRY(co_await run_on_pool(blocking_, [this, &row] { return store_.upsert_account(row); }));
  {
    // The new authorization supersedes whatever this process still held for the account.
    std::lock_guard lock(mutex_);
    pending_writes_.erase(row.email);
    memory_.erase(row.email);
  }
  if (cache_ != nullptr) {
    if (row.use_oauth && !row.access_token.empty()) {
      CachedToken entry{row.access_token, row.token_expiry, row.refresh_token, row.refreshed_at_ms};
      co_await run_on_pool(
          blocking_, [this, &row, &entry] { return cache_->put(row.email, entry, clock_()); });
    } else {
      co_await run_on_pool(blocking_, [this, &row] { return cache_->erase(row.email); });
    }
  }
  if (row.use_oauth && !row.access_token.empty()) {
    memory_store(row.email, FreshToken{row.access_token, false, row.token_expiry,
                                       row.refreshed_at_ms, TokenSource::refresh});
  }
  co_return Result<void>{};
}

void TokenService::emit(storage::AuditEvent event, const std::string& email,
                        std::string detail) const {
  if (settings_.on_event) {
    settings_.on_event(event, email, std::move(detail));
  }
}

awaitable<std::size_t> TokenService::retry_pending_writes() {
  co_return co_await retry_pending_once(true);
}

std::size_t TokenService::pending_write_count() {
  std::lock_guard lock(mutex_);
  return pending_writes_.size();
}

awaitable<std::vector<std::string>> TokenService::flush_pending_writes(
    std::chrono::milliseconds window) {
  using std::chrono::steady_clock;
  const auto deadline = steady_clock::now() + window;
  const auto count = pending_write_count();
  if (count == 0) {
    co_return std::vector<std::string>{};
  }
  spdlog::warn("{} refreshed token(s) not yet in the database; retrying the write for up to {} ms",
               count, window.count());
  std::size_t left = co_await retry_pending_once(false);
  net::steady_timer timer(co_await net::this_coro::executor);
  auto delay = std::chrono::milliseconds(100);
  while (left > 0 && steady_clock::now() < deadline) {
    timer.expires_after(std::min<steady_clock::duration>(delay, deadline - steady_clock::now()));
    co_await timer.async_wait(net::use_awaitable);
    delay = std::min(delay * 2, std::chrono::milliseconds(1000));
    left = co_await retry_pending_once(false);
  }
  std::vector<std::pair<std::string, std::string>> lost;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [email, pending] : pending_writes_) {
      // Only a rotated refresh token is a loss; an access token alone is simply obtained again.
      if (pending.update.refresh_token) {
        lost.emplace_back(email, pending.last_error);
      }
    }
  }
  std::vector<std::string> accounts;
  for (auto& [email, why] : lost) {
    spdlog::error(
        "refresh token of {} NOT persisted: {}. {}If the token endpoint has revoked the stored "
        "one, run 'imap-oauth2-proxy account reauth {}'",
        email, why,
        cache_ != nullptr ? "It stays in Redis for up to 24 h, where the next start finds it. "
                          : "",
        email);
    accounts.push_back(std::move(email));
  }
  co_return accounts;
}

awaitable<std::size_t> TokenService::retry_pending_once(bool log_failures) {
  std::map<std::string, PendingWrite> pending;
  {
    std::lock_guard lock(mutex_);
    pending = pending_writes_;
  }
  for (auto& [email, entry] : pending) {
    auto& update = entry.update;
    auto written = co_await run_on_pool(
        blocking_, [this, &email = email, &update] { return store_.update_tokens(email, update); });
    std::lock_guard lock(mutex_);
    auto it = pending_writes_.find(email);
    if (!written) {
      if (log_failures) {
        spdlog::warn("Error persisting tokens to database for {} (retry): {}", email,
                     written.error());
      }
      if (it != pending_writes_.end()) {
        it->second.last_error = written.error().message;
      }
      continue;
    }
    spdlog::info("Token for {} persisted to database (after an earlier failure)", email);
    if (it != pending_writes_.end() &&
        it->second.update.refreshed_at_ms <= update.refreshed_at_ms) {
      pending_writes_.erase(it);
    }
  }
  std::size_t left = 0;
  {
    std::lock_guard lock(mutex_);
    left = pending_writes_.size();
  }
  co_return left;
}

}  // namespace iop::auth
