#include "auth/loopback_listener.hpp"

#include <fmt/format.h>

#include <array>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "auth/pkce.hpp"
#include "common/deadline.hpp"
#include "common/duration.hpp"

namespace iop::auth {

namespace {

using boost::system::error_code;

// A browser's GET for the redirect is a few hundred bytes plus the code (1-2 KB at Microsoft);
// 8 KiB of request head is plenty and bounds what a stray local client can make us hold.
constexpr std::size_t max_request_head = 8 * 1024;
// Per connection: time to send the request head and take the answer. A browser does both at
// once; a speculative connection that never sends anything is dropped after this.
constexpr std::chrono::seconds connection_deadline{5};
// What a turned-away client may still send before we close anyway.
constexpr std::size_t max_drain_bytes = 64 * 1024;

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A complete HTTP/1.1 response with a small HTML page. The page loads nothing and links
// nowhere; no-referrer and no-store keep the URL that carried the code from travelling on.
std::string http_response(int status, std::string_view reason, std::string_view title,
                          std::string_view text) {
  const auto body = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0} - "
      "imap-oauth2-proxy</title></head>\n<body style=\"font-family:sans-serif;margin:3em\">"
      "<h1>{0}</h1>\n<p>{1}</p></body></html>\n",
      html_escape(title), html_escape(text));
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n"
      "Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n"
      "X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; "
      "style-src 'unsafe-inline'\r\nConnection: close\r\n\r\n{}",
      status, reason, body.size(), body);
}

// What one connection's request amounts to.
struct Answer {
  std::string response;
  std::optional<Result<Secret>> outcome;  // set when the request was the redirect
};

// Decides from the request head (everything up to the blank line).
Answer answer_request(std::string_view head, std::string_view redirect_uri,
                      std::string_view expected_state) {
  const auto line = head.substr(0, head.find("\r\n"));
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) {
    return {http_response(400, "Bad Request", "Bad request", "This is not an HTTP request."), {}};
  }
  const auto method = line.substr(0, sp1);
  const auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (method != "GET") {
    return {http_response(405, "Method Not Allowed", "Not here",
                          "This address only receives the sign-in answer."),
            {}};
  }
  const auto path = target.substr(0, target.find_first_of("?#"));
  if (path != "/") {
    return {http_response(404, "Not Found", "Not here",
                          "This address only receives the sign-in answer."),
            {}};
  }
  if (target.find('?') == std::string_view::npos) {
    return {http_response(404, "Not Found", "Waiting for the sign-in",
                          "This address receives the sign-in answer; this request carries none."),
            {}};
  }
  auto outcome = parse_redirect(target, redirect_uri, expected_state);
  Answer answer;
  if (outcome) {
    answer.response =
        http_response(200, "OK", "Signed in",
                      "Signed in \u2014 you can close this window and return to the terminal.");
  } else {
    answer.response = http_response(400, "Bad Request", "Sign-in failed",
                                    outcome.error().message + ". Return to the terminal.");
  }
  answer.outcome.emplace(std::move(outcome));
  return answer;
}

// What the accept loop and the connections share, all on one executor.
struct WaitState {
  WaitState(net::any_io_executor ex, tcp::acceptor& acc, std::string uri, std::string state)
      : timer(ex), acceptor(acc), redirect_uri(std::move(uri)), expected_state(std::move(state)) {}

  // The first outcome wins; it stops accepting and closes every connection still open.
  void finish(Result<Secret> r) {
    if (result) {
      return;
    }
    result.emplace(std::move(r));
    error_code ignored;
    acceptor.close(ignored);
    timer.cancel();
    for (auto& weak : live) {
      if (auto socket = weak.lock()) {
        socket->close(ignored);
      }
    }
    live.clear();
  }

  std::optional<Result<Secret>> result;
  net::steady_timer timer;
  tcp::acceptor& acceptor;
  std::string redirect_uri;
  std::string expected_state;
  std::vector<std::weak_ptr<tcp::socket>> live;
};

awaitable<void> serve(std::shared_ptr<WaitState> state, std::shared_ptr<tcp::socket> socket) {
  // Asio 1.18 has no per-operation cancellation: a timer closes the socket at the deadline,
  // which ends the pending read or write with an error (STYLE.md §3.3 watchdog).
  // The executor first: no owning temporary inside a co_await expression (GCC 12, PR 100611).
  const auto executor = co_await net::this_coro::executor;
  Deadline deadline(executor, connection_deadline, [socket] {
    error_code ignored;
    socket->close(ignored);
  });

  std::string head;
  std::array<char, 2048> buffer{};
  std::optional<Answer> answer;
  while (!answer) {
    error_code ec;
    const std::size_t n = co_await socket->async_read_some(
        net::buffer(buffer), net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      deadline.disarm();
      co_return;  // the peer went away, the deadline passed, or the wait is over
    }
    head.append(buffer.data(), n);
    const auto end = head.find("\r\n\r\n");
    if (end != std::string::npos && end + 4 <= max_request_head) {
      answer = answer_request(std::string_view(head).substr(0, end), state->redirect_uri,
                              state->expected_state);
    } else if (head.size() > max_request_head) {
      answer = Answer{http_response(431, "Request Header Fields Too Large", "Request too large",
                                    "The request is larger than a sign-in answer can be."),
                      {}};
    }
  }
  error_code ec;
  co_await net::async_write(*socket, net::buffer(answer->response),
                            net::redirect_error(net::use_awaitable, ec));
  socket->shutdown(tcp::socket::shutdown_send, ec);
  if (answer->outcome) {
    // The whole head was read (a GET has no body), so closing now sends a FIN, not a reset.
    deadline.disarm();
    socket->close(ec);
    state->finish(std::move(*answer->outcome));
    co_return;
  }
  // Lingering close for the requests we turn away: the client may still be sending (an
  // oversized head), and closing with unread data would reset the connection before it reads
  // our answer. Read until it closes, within the deadline and a cap.
  std::size_t drained = 0;
  while (!ec && drained < max_drain_bytes) {
    drained += co_await socket->async_read_some(net::buffer(buffer),
                                                net::redirect_error(net::use_awaitable, ec));
  }
  deadline.disarm();
  socket->close(ec);
}

}  // namespace

LoopbackListener::LoopbackListener(tcp::acceptor acceptor, int port)
    : acceptor_(std::move(acceptor)), port_(port) {}

Result<LoopbackListener> LoopbackListener::open(net::io_context& ioc) {
  // RFC 8252 §8.3: listen on the loopback interface only, never on all interfaces.
  const tcp::endpoint endpoint(net::ip::address_v4::loopback(), 0);
  tcp::acceptor acceptor(ioc);
  error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  tcp::endpoint bound;
  if (!ec) {
    bound = acceptor.local_endpoint(ec);
  }
  if (ec) {
    return fail(Errc::internal,
                fmt::format("cannot listen on 127.0.0.1 for the sign-in answer ({}); use --paste "
                            "or --device-code instead",
                            ec.message()));
  }
  return LoopbackListener(std::move(acceptor), bound.port());
}

std::string LoopbackListener::redirect_uri() const {
  return fmt::format("http://localhost:{}/", port_);
}

awaitable<Result<Secret>> LoopbackListener::wait_for_code(std::string expected_state,
                                                          std::chrono::milliseconds timeout) {
  const auto ex = co_await net::this_coro::executor;
  auto state =
      std::make_shared<WaitState>(ex, acceptor_, redirect_uri(), std::move(expected_state));
  state->timer.expires_after(timeout);
  state->timer.async_wait([state, timeout](error_code ec) {
    if (!ec) {
      state->finish(fail(Errc::invalid_argument,
                         fmt::format("no sign-in arrived within {}; run the command again (or use "
                                     "--paste / --device-code on a machine without a browser)",
                                     format_duration(timeout))));
    }
  });

  while (!state->result) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(net::redirect_error(net::use_awaitable, ec));
    if (state->result) {
      break;  // finished while this accept was pending (the acceptor was closed)
    }
    if (ec) {
      // Out of file descriptors and the like: the wait cannot go on.
      state->finish(fail(
          Errc::internal,
          fmt::format("the sign-in listener stopped ({}); run the command again", ec.message())));
      break;
    }
    auto shared = std::make_shared<tcp::socket>(std::move(socket));
    std::erase_if(state->live, [](const auto& weak) { return weak.expired(); });
    state->live.push_back(shared);
    // Not net::detached: an exception in a connection (bad_alloc) ends the wait with an error
    // instead of vanishing (STYLE.md check 3).
    net::co_spawn(ex, serve(state, std::move(shared)), [state](std::exception_ptr e) {
      if (e) {
        state->finish(fail(Errc::internal, "the sign-in listener failed unexpectedly"));
      }
    });
  }
  co_return std::move(*state->result);
}

}  // namespace iop::auth
