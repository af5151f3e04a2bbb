#include "auth/token_policy.hpp"

#include <algorithm>

namespace iop::auth {

TokenNeed need_for(const FreshnessPolicy& policy, TokenUse use) {
  const auto remaining = use == TokenUse::session
                             ? std::max(policy.refresh_margin, policy.session_min_lifetime)
                             : policy.refresh_margin;
  return TokenNeed{remaining, 0};
}

bool satisfies(const TokenNeed& need, std::int64_t expiry, std::int64_t refreshed_at_ms,
               SystemTime now) {
  if (expiry <= 0 || refreshed_at_ms < need.refreshed_after_ms) {
    return false;
  }
  return expiry - to_unix_seconds(now) >= need.min_remaining.count();
}

bool may_serve_after_failed_refresh(const TokenNeed& need, std::int64_t expiry,
                                    std::int64_t refreshed_at_ms, SystemTime now) {
  return refreshed_at_ms >= need.refreshed_after_ms && expiry - to_unix_seconds(now) > 60;
}

bool keepalive_due(std::int64_t refreshed_at_ms, std::chrono::seconds keepalive, SystemTime now) {
  const auto age_ms = to_unix_millis(now) - refreshed_at_ms;
  return age_ms >= std::chrono::duration_cast<std::chrono::milliseconds>(keepalive).count();
}

}  // namespace iop::auth
