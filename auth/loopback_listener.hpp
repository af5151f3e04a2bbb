#pragma once
// The one-shot loopback redirect receiver of the browser sign-in (RFC 8252 §7.3): listens on
// 127.0.0.1 on an ephemeral port, takes the authorization response the browser is redirected
// to, answers the browser with a small page, and hands the code to the caller.

#include <chrono>
#include <string>

#include "common/asio.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

class LoopbackListener {
 public:
  // Binds 127.0.0.1, port 0 (the system picks a free one), and listens. Fails with
  // Errc::internal and the system's reason if no socket can be opened.
  static Result<LoopbackListener> open(net::io_context& ioc);

  LoopbackListener(LoopbackListener&&) noexcept = default;
  LoopbackListener& operator=(LoopbackListener&&) noexcept = default;

  [[nodiscard]] int port() const { return port_; }
  // "http://localhost:PORT/": Microsoft matches loopback redirect URIs registered as
  // "http://localhost" on any port (RFC 8252 §7.3), and requires the name "localhost".
  [[nodiscard]] std::string redirect_uri() const;

  // Accepts connections until one brings a request for "/" with a query: that query goes
  // through parse_redirect(target, redirect_uri(), expected_state), the browser gets a page
  // saying it worked or why not (HTML-escaped, Connection: close), and the result is returned.
  // Other requests (/favicon.ico, "/" without a query, other methods, an oversized head) are
  // answered with an error status and ignored. Each connection may send at most 8 KiB of request
  // head within a 5 s deadline, and connections are served concurrently (a browser's idle
  // speculative connection does not hold up the real one).
  //
  // Fails with Errc::invalid_argument when nothing arrives within `timeout` ("no sign-in arrived
  // within 5m; run the command again ..."), or with parse_redirect's error. The listener is
  // closed afterwards: call once. Suspends; `*this` must outlive the call. Everything runs on
  // the calling coroutine's executor, so a multi-threaded io_context needs a strand there.
  awaitable<Result<Secret>> wait_for_code(std::string expected_state,
                                          std::chrono::milliseconds timeout);

 private:
  LoopbackListener(tcp::acceptor acceptor, int port);

  tcp::acceptor acceptor_;
  int port_ = 0;
};

}  // namespace iop::auth
