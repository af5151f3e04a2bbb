#include "auth/refresher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/blocking.hpp"

namespace iop::auth {

Refresher::Refresher(TokenService& service, RefresherSettings settings, WallClock clock)
    : service_(service), settings_(settings), clock_(std::move(clock)) {}

awaitable<void> Refresher::run() {
  timer_ = std::make_shared<net::steady_timer>(co_await net::this_coro::executor);
  while (!stopping_) {
    try {
      const auto pass = co_await run_once();
      if (pass.refreshed > 0 || pass.failed > 0 || pass.pending_writes > 0) {
        spdlog::info("background refresh: {} refreshed, {} failed, {} database writes pending",
                     pass.refreshed, pass.failed, pass.pending_writes);
      }
    } catch (const std::exception& e) {
      spdlog::error("background refresh pass failed: {}", e.what());
    }
    if (stopping_) {
      break;
    }
    timer_->expires_after(settings_.tick);
    boost::system::error_code ec;
    co_await timer_->async_wait(net::redirect_error(net::use_awaitable, ec));
  }
}

void Refresher::stop() {
  stopping_ = true;
  if (auto timer = timer_) {
    net::post(timer->get_executor(), [timer] { timer->cancel(); });
  }
}

awaitable<RefreshPass> Refresher::run_once() {
  RefreshPass pass;
  pass.pending_writes = co_await service_.retry_pending_writes();

  auto& store = service_.store();
  auto accounts =
      co_await run_on_pool(service_.blocking_executor(), [&store] { return store.list(); });
  if (!accounts) {
    spdlog::warn("background refresh: cannot list accounts: {}", accounts.error());
    co_return pass;
  }

  const auto now = clock_();
  const auto& freshness = service_.settings().freshness;
  // Enough life for a session that starts just before the next pass.
  const auto ahead = std::max(freshness.session_min_lifetime, freshness.refresh_margin) +
                     std::chrono::duration_cast<std::chrono::seconds>(settings_.tick) +
                     std::chrono::seconds(1);
  const auto used = service_.accounts_used_within(settings_.in_use_window);
  const std::set<std::string> in_use(used.begin(), used.end());

  for (const auto& account : *accounts) {
    if (stopping_) {
      break;
    }
    if (!account.use_oauth || account.status != storage::AccountStatus::active) {
      continue;
    }
    const bool due_for_use =
        in_use.contains(account.email) &&
        account.token_expiry - to_unix_seconds(now) < static_cast<std::int64_t>(ahead.count());
    const bool due_for_keepalive = keepalive_due(account.refreshed_at_ms, settings_.keepalive, now);
    if (!due_for_use && !due_for_keepalive) {
      continue;
    }
    spdlog::debug("background refresh of {} ({})", account.email,
                  due_for_use ? "in use, token due" : "keepalive");
    std::string email = account.email;  // moved, not copied, into the coroutine (GCC 12)
    const auto result = co_await service_.refresh_now(std::move(email));
    if (result) {
      ++pass.refreshed;
    } else {
      ++pass.failed;
    }
  }
  co_return pass;
}

}  // namespace iop::auth
