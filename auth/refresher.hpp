#pragma once
// The background refresher: keeps tokens of accounts in use fresh before a login needs them,
// refreshes every account at least every `keepalive` so no refresh token dies of Microsoft's
// 90-day inactivity limit (AADSTS700082), and retries database writes that failed.

#include <atomic>
#include <chrono>
#include <memory>

#include "auth/token_service.hpp"
#include "common/asio.hpp"

namespace iop::auth {

struct RefresherSettings {
  std::chrono::milliseconds tick{std::chrono::seconds(60)};
  std::chrono::seconds keepalive{std::chrono::hours(24 * 7)};
  // An account counts as in use when a token was asked for within this window.
  std::chrono::seconds in_use_window{std::chrono::hours(2)};
};

struct RefreshPass {
  int refreshed = 0;               // successful refreshes
  int failed = 0;                  // refreshes that failed (logged by the token service)
  std::size_t pending_writes = 0;  // database writes still failing
};

class Refresher {
 public:
  Refresher(TokenService& service, RefresherSettings settings,
            WallClock clock = system_wall_clock());

  // Runs passes every `tick` until stop(). Run it on an I/O executor.
  awaitable<void> run();
  // One pass: pending writes, then accounts in use whose token will not last until the next
  // pass with a session's minimum lifetime, then accounts due for their keepalive refresh.
  awaitable<RefreshPass> run_once();
  // Ends run() at its next wake-up (thread-safe).
  void stop();

 private:
  TokenService& service_;
  RefresherSettings settings_;
  WallClock clock_;
  std::atomic<bool> stopping_{false};
  std::shared_ptr<net::steady_timer> timer_;
};

}  // namespace iop::auth
