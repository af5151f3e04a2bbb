#include "auth/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace iop::auth {

namespace {

// A server asking for longer than this is not worth holding a login for; the caller gives up
// and the next login tries again.
constexpr std::chrono::seconds max_retry_after{60};

}  // namespace

std::chrono::milliseconds backoff_delay(const BackoffPolicy& policy, int attempt, double jitter,
                                        std::optional<std::chrono::seconds> retry_after) {
  const double base = static_cast<double>(std::max<std::int64_t>(policy.base.count(), 0));
  const double cap = static_cast<double>(std::max<std::int64_t>(policy.cap.count(), 0));
  // Doubles, so a large attempt saturates at the cap instead of overflowing a shift.
  const int exponent = std::clamp(attempt, 1, 64) - 1;
  const double raw = std::min(base * std::exp2(exponent), cap);
  // Half fixed, half random: waits never collapse to zero, and clients that failed together
  // spread out (the "equal jitter" variant of AWS's backoff write-up).
  const double j = std::isfinite(jitter) ? std::clamp(jitter, 0.0, 1.0) : 0.0;
  auto delay = std::chrono::milliseconds(static_cast<std::int64_t>(raw * (0.5 + j / 2)));
  if (retry_after && *retry_after > std::chrono::seconds(0)) {
    const auto server = std::chrono::milliseconds(std::min(*retry_after, max_retry_after));
    delay = std::max(delay, server);
  }
  return delay;
}

}  // namespace iop::auth
