#include "proxy/spare_pool.hpp"

#include <spdlog/spdlog.h>

#include "common/host_port.hpp"

namespace iop::proxy {

namespace {

// On the spare's home executor: takes the stream and what the server sent from its watcher.
template <typename S>
awaitable<std::optional<SpareConnection>> claim_on_home(std::shared_ptr<S> spare) {
  if (!co_await claim_parked(*spare)) {
    co_return std::nullopt;
  }
  SpareConnection out;
  out.stream = std::move(spare->stream);
  out.received = std::move(spare->pending);
  co_return out;
}

}  // namespace

std::shared_ptr<SparePool> SparePool::create(net::ssl::context& tls, SparePolicy policy,
                                             std::chrono::milliseconds timeout) {
  return std::make_shared<SparePool>(tls, policy, timeout);
}

SparePool::SparePool(net::ssl::context& tls, SparePolicy policy, std::chrono::milliseconds timeout)
    : tls_(tls), policy_(policy), timeout_(timeout) {}

std::size_t SparePool::parked() {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [key, server] : servers_) {
    n += server.parked ? 1 : 0;
  }
  return n;
}

awaitable<std::optional<SpareConnection>> SparePool::take(const UpstreamEndpoint& endpoint) {
  const auto executor = co_await net::this_coro::executor;
  const auto key = format_host_port(endpoint.host, endpoint.port);
  const auto now = SpareClock::now();
  std::shared_ptr<Spare> spare;
  bool usable = false;
  {
    std::lock_guard lock(mutex_);
    auto& server = servers_[key];
    note_login(server.state, now);
    if (server.parked) {
      spare = std::move(server.parked);
      server.state.parked = false;
      usable = spare_usable(policy_, spare->created, now);
    }
  }
  if (!spare) {
    co_return std::nullopt;
  }
  if (!usable) {
    // Its retirement is due this instant: the login connects afresh.
    close_parked(spare, "no login took it in time");
    co_return std::nullopt;
  }
  const auto home = spare->home;
  auto op = claim_on_home(spare);
  auto claim = net::co_spawn(home, std::move(op), net::use_awaitable);
  auto claimed = co_await std::move(claim);
  if (!claimed) {
    co_return std::nullopt;  // the server closed it, or it was being retired, just now
  }
  boost::system::error_code ec;
  move_to_executor(*claimed->stream, executor, ec);
  if (ec) {
    spdlog::info("spare connection to {} dropped ({}): connecting afresh", key, ec.message());
    co_return std::nullopt;
  }
  co_return claimed;
}

void SparePool::replenish(const UpstreamEndpoint& endpoint, const net::any_io_executor& executor) {
  auto key = format_host_port(endpoint.host, endpoint.port);
  {
    std::lock_guard lock(mutex_);
    if (stopped_) {
      return;
    }
    auto it = servers_.find(key);
    if (it == servers_.end() || !should_open_spare(policy_, it->second.state, SpareClock::now())) {
      return;
    }
    it->second.state.making = true;
  }
  auto op = open_spare(endpoint, key);
  net::co_spawn(executor, std::move(op), [self = shared_from_this(), key](std::exception_ptr e) {
    if (!e) {
      return;
    }
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("spare connection to {}: internal error: {}", key, ex.what());
    }
    self->opened_nothing(key);
  });
}

void SparePool::opened_nothing(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto& state = servers_[key].state;
  state.making = false;
  state.failed = true;
}

awaitable<void> SparePool::open_spare(UpstreamEndpoint endpoint, std::string key) {
  const auto executor = co_await net::this_coro::executor;
  auto opened = co_await open_upstream(tls_, endpoint, timeout_);
  if (!opened) {
    spdlog::info("spare connection to {} not opened: {}", key, opened.error().detail);
    opened_nothing(key);
    co_return;
  }
  auto spare = std::make_shared<Spare>(executor);
  spare->key = key;
  spare->created = SpareClock::now();
  spare->stream = std::move(*opened);
  bool keep = false;
  {
    std::lock_guard lock(mutex_);
    auto& server = servers_[key];
    server.state.making = false;
    if (!stopped_) {
      server.parked = spare;
      server.state.parked = true;
      keep = true;
    }
  }
  if (!keep) {
    co_await close_parked_stream(*spare->stream, true);
    co_return;
  }
  spdlog::debug("spare connection to {} ready", key);
  spare->timer.expires_after(policy_.max_idle);
  spare->timer.async_wait([spare](boost::system::error_code ec) {
    if (!ec) {
      retire_parked(*spare, "no login took it in time");
    }
  });
  if (co_await watch_parked(*spare)) {
    co_return;  // a login has it
  }
  unpark(spare);
  if (spare->server_closed) {
    spdlog::info("spare connection to {} closed: {}; none until the next login", key, spare->why);
  } else {
    spdlog::debug("spare connection to {} closed: {}", key, spare->why);
  }
  co_await close_parked_stream(*spare->stream, !spare->server_closed);
  if (!spare->server_closed) {
    replenish(endpoint, executor);  // retired: replaced while the server is still wanted
  }
}

void SparePool::unpark(const std::shared_ptr<Spare>& spare) {
  std::lock_guard lock(mutex_);
  auto& server = servers_[spare->key];
  if (server.parked == spare) {
    server.parked.reset();
    server.state.parked = false;
  }
  if (spare->server_closed) {
    server.state.failed = true;
  }
}

void SparePool::stop() {
  std::vector<std::shared_ptr<Spare>> all;
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    for (auto& [key, server] : servers_) {
      if (server.parked) {
        all.push_back(std::move(server.parked));
        server.state.parked = false;
      }
    }
  }
  for (const auto& spare : all) {
    close_parked(spare, "shutdown");
  }
}

}  // namespace iop::proxy
