#include "app/serve.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/signal_set.hpp>
#include <thread>

#include "auth/refresher.hpp"

namespace iop::app {

int serve(Services& services) {
  const auto& cfg = services.config;
  net::io_context ioc;
  auth::RefresherSettings rs;
  rs.tick = cfg.oauth.background_refresh;
  rs.keepalive = std::chrono::duration_cast<std::chrono::seconds>(cfg.oauth.keepalive);
  auth::Refresher refresher(*services.tokens, rs);

  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (!ec) {
      spdlog::info("signal {}: shutting down", sig);
      refresher.stop();
    }
  });
  std::exception_ptr failure;
  net::co_spawn(ioc, refresher.run(), [&](std::exception_ptr e) {
    failure = e;
    signals.cancel();
  });

  const auto accounts = services.store->list();
  spdlog::info("serve: {} account(s) in {}, Redis {}, background refresh every {}s",
               accounts ? accounts->size() : 0, cfg.storage.database.string(),
               cfg.redis.url.empty() ? "off (database only)" : "on",
               std::chrono::duration_cast<std::chrono::seconds>(rs.tick).count());
  ioc.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      spdlog::error("serve: {}", e.what());
      return 1;
    }
  }
  return 0;
}

}  // namespace iop::app
