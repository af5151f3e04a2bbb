#pragma once
// Capped exponential backoff with full jitter. Pure.

#include <chrono>
#include <optional>

namespace iop::auth {

struct BackoffPolicy {
  int max_attempts = 4;  // total attempts, the first included
  std::chrono::milliseconds base{250};
  std::chrono::milliseconds cap{8000};
  // The whole refresh, attempts and waits included, stays under this: no new attempt starts
  // that could run past it (counting the HTTP timeout). Keeps a refresh shorter than the Redis
  // lock that holds other instances off.
  std::chrono::milliseconds max_total{std::chrono::seconds(25)};
};

// The wait before attempt `attempt + 1` (attempt counts from 1), given a uniform random
// `jitter` in [0, 1): base * 2^(attempt-1), capped, scaled by (0.5 + jitter / 2). A server's
// Retry-After wins when longer, itself capped at 60 s.
std::chrono::milliseconds backoff_delay(const BackoffPolicy& policy, int attempt, double jitter,
                                        std::optional<std::chrono::seconds> retry_after);

}  // namespace iop::auth
