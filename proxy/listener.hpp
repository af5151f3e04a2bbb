#pragma once
// The accept loop of one listening address (implicit TLS or plain + STARTTLS): each connection
// gets its own strand, a short id (c42) and a session coroutine. Over max_connections, the
// session only says BYE.

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "common/asio.hpp"
#include "common/result.hpp"
#include "proxy/session.hpp"

namespace iop::proxy {

// Picks the executor a new connection runs on (one single-threaded io_context per core, round
// robin: a session never hops between threads, which keeps the relay free of wake-ups).
using ExecutorPicker = std::function<net::any_io_executor()>;

class Listener {
 public:
  // Binds `host`:`port` (port 0: any free port; see port()) on `ioc`; sessions run on the
  // executors `pick` returns. Errc::config_error when it cannot bind.
  static Result<std::unique_ptr<Listener>> bind(net::io_context& ioc, const std::string& host,
                                                int port, bool implicit_tls, SessionDeps deps,
                                                ExecutorPicker pick,
                                                ListenerProtocol protocol = ListenerProtocol::imap);

  // Accepts until stop(). Run it with co_spawn on the io_context.
  awaitable<void> run();
  // Stops accepting (thread-safe); live sessions go on.
  void stop();

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] const std::string& name() const { return info_.name; }
  // Sessions running across every listener of this process.
  static int active_sessions() { return active_.load(); }

 private:
  Listener(tcp::acceptor acceptor, ListenerInfo info, SessionDeps deps, ExecutorPicker pick);

  ExecutorPicker pick_;
  tcp::acceptor acceptor_;
  ListenerInfo info_;
  SessionDeps deps_;
  int port_ = 0;
  static std::atomic<int> active_;
  static std::atomic<std::uint64_t> next_id_;
};

}  // namespace iop::proxy
