#pragma once
// When is a stored access token good enough? Pure: time is a parameter.

#include <chrono>
#include <cstdint>

#include "common/clock.hpp"

namespace iop::auth {

struct FreshnessPolicy {
  // Refresh when less than this remains, whatever the token is for.
  std::chrono::seconds refresh_margin{std::chrono::minutes(5)};
  // A token handed out for a new IMAP session must have at least this much life left: Exchange
  // Online ends a session ("* BYE Session invalidated - AccessTokenExpired") when the token used
  // at login expires, and Microsoft access tokens live a random 60-90 minutes.
  std::chrono::seconds session_min_lifetime{std::chrono::minutes(45)};
};

enum class TokenUse {
  session,    // a new IMAP session: needs session_min_lifetime
  immediate,  // used at once (the `token` command, a probe): needs refresh_margin
};

// What a caller needs from a token.
struct TokenNeed {
  std::chrono::seconds min_remaining{0};
  // Only a token obtained at or after this time (unix ms) will do: forces a refresh while
  // letting concurrent callers share the one that satisfies it. 0: any.
  std::int64_t refreshed_after_ms = 0;
};

TokenNeed need_for(const FreshnessPolicy& policy, TokenUse use);

// Whether a token expiring at `expiry` (unix s), obtained at `refreshed_at_ms`, meets `need`.
bool satisfies(const TokenNeed& need, std::int64_t expiry, std::int64_t refreshed_at_ms,
               SystemTime now);

// After a refresh failed for a passing reason (the endpoint down, a bad answer): whether the
// token held may be served instead. Only when it has more than a minute left, and never when the
// caller asked for a token newer than it (a forced refresh: the upstream just refused this one,
// and serving it again turns an endpoint outage into a wrong-password answer).
bool may_serve_after_failed_refresh(const TokenNeed& need, std::int64_t expiry,
                                    std::int64_t refreshed_at_ms, SystemTime now);

// Whether an account last refreshed at `refreshed_at_ms` must be refreshed to keep its refresh
// token alive (Microsoft revokes refresh tokens unused for 90 days, AADSTS700082).
bool keepalive_due(std::int64_t refreshed_at_ms, std::chrono::seconds keepalive, SystemTime now);

}  // namespace iop::auth
