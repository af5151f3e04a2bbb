#pragma once
// The spare pool ([upstream] preconnect, on by default): for each upstream server with a login
// in the last few minutes, one connection opened ahead of need (TCP, TLS, certificate checked;
// not logged in, no credential), taken by the next login to that server, which then starts with
// AUTHENTICATE. The decisions are in proxy/spare_policy.hpp (pure); the parking mechanics are
// ParkedStream's (proxy/parked_stream.hpp): the spare's greeting, and anything else the server
// sends while it waits, is kept for the login; a server close or BYE drops it.
//
// Spares are opened on the executor of the login that asked (after that login is done), never
// inside a session; a login on another worker moves the socket to its own.
//
// Thread safety: every public member may be called from any thread. The pool's state is under
// one mutex never held across a co_await.

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/asio.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/parked_stream.hpp"
#include "proxy/spare_policy.hpp"
#include "proxy/upstream.hpp"

namespace iop::proxy {

// A spare, now the login's: on the login's executor.
struct SpareConnection {
  std::unique_ptr<ImapStream> stream;
  std::string received;  // what the server sent so far (its greeting): the login machine's input
};

class SparePool : public std::enable_shared_from_this<SparePool> {
 public:
  // `tls` must outlive the pool and every coroutine it starts (serve: it does). `timeout`
  // bounds opening one spare (resolve, connect, TLS), as [upstream] timeout bounds a login.
  static std::shared_ptr<SparePool> create(net::ssl::context& tls, SparePolicy policy,
                                           std::chrono::milliseconds timeout);

  // A login to `endpoint` starts: the spare, moved to the calling coroutine's executor, when
  // there is a usable one. Suspends only to take it from its home executor.
  awaitable<std::optional<SpareConnection>> take(const UpstreamEndpoint& endpoint);

  // A login to `endpoint` is over (either way): opens the next spare on `executor` when the
  // policy says so. Does not wait.
  void replenish(const UpstreamEndpoint& endpoint, const net::any_io_executor& executor);

  // For shutdown: nothing new is opened; parked spares are closed on their home executors.
  // Does not wait.
  void stop();

  // For tests and logs: spares parked right now.
  [[nodiscard]] std::size_t parked();

  SparePool(net::ssl::context& tls, SparePolicy policy, std::chrono::milliseconds timeout);

 private:
  struct Spare : ParkedStream {
    using ParkedStream::ParkedStream;
    std::string key;  // "host:port"
    SpareTime created;
  };
  struct Server {
    SpareState state;
    std::shared_ptr<Spare> parked;
  };

  awaitable<void> open_spare(UpstreamEndpoint endpoint, std::string key);
  void opened_nothing(const std::string& key);
  void unpark(const std::shared_ptr<Spare>& spare);

  net::ssl::context& tls_;
  SparePolicy policy_;
  std::chrono::milliseconds timeout_;

  std::mutex mutex_;  // guards what follows; never held across a co_await
  std::map<std::string, Server> servers_;
  bool stopped_ = false;
};

}  // namespace iop::proxy
