#include "proxy/upstream.hpp"

#include <spdlog/spdlog.h>

#include "common/deadline.hpp"
#include "common/host_port.hpp"
#include "proxy/spare_pool.hpp"

namespace iop::proxy {

namespace {

using Failure = std::unexpected<UpstreamError>;

Failure failure(UpstreamFailure kind, std::string detail) {
  return std::unexpected(UpstreamError{kind, std::move(detail)});
}

// How a login on an open stream failed, when it did.
struct LoginTrouble {
  bool timed_out = false;        // the deadline passed
  bool connection_lost = false;  // a read or write failed: the server did not answer
};

// The login protocol on an open stream, within `timeout`. `received`: server bytes already read
// (a spare's greeting), fed to the machine before anything else. References: the caller awaits
// (GCC PR 100611, docs/design.md).
awaitable<std::expected<UpstreamConnection, UpstreamError>> log_in(
    std::unique_ptr<ImapStream>& stream, const std::string& received,
    const UpstreamLoginOptions& options, std::chrono::milliseconds timeout, LoginTrouble& trouble) {
  const auto executor = co_await net::this_coro::executor;
  boost::system::error_code ec;
  // When the deadline passes, the socket is closed and whatever step is waiting fails. It is
  // disarmed when this frame ends (declared after what it closes).
  const Deadline deadline(executor, timeout, [socket = &stream->socket()] {
    boost::system::error_code ignored;
    socket->close(ignored);
  });

  // The login protocol is the machine's; this loop moves bytes between it and the stream.
  UpstreamLoginMachine machine(options);
  auto io_failure = [&](std::string_view step) {
    trouble.timed_out = deadline.fired();
    trouble.connection_lost = true;
    return failure(UpstreamFailure::unavailable,
                   trouble.timed_out
                       ? fmt::format("timed out during {} with {}", step, options.where)
                       : fmt::format("{} with {} failed: {}", step, options.where, ec.message()));
  };
  std::vector<char> buffer(4096);
  std::string_view input = received;
  for (;;) {
    if (input.empty()) {
      const auto n = co_await stream->read_some(net::buffer(buffer), ec);
      if (ec) {
        co_return io_failure(machine.step());
      }
      input = std::string_view(buffer.data(), n);
    }
    auto actions = machine.feed(input);
    input = {};
    for (auto& action : actions) {
      if (auto* send = std::get_if<upstream_login::Send>(&action)) {
        const std::string& bytes = send->bytes.reveal();
        co_await stream->write_all(net::buffer(bytes), ec);
        if (ec) {
          co_return io_failure(send->step);
        }
      } else if (auto* done = std::get_if<upstream_login::Done>(&action)) {
        co_return UpstreamConnection{std::move(stream), std::move(done->capabilities),
                                     std::move(done->pending)};
      } else if (auto* failed = std::get_if<upstream_login::Failed>(&action)) {
        co_return std::unexpected(std::move(failed->error));
      }
    }
  }
}

}  // namespace

awaitable<std::expected<std::unique_ptr<ImapStream>, UpstreamError>> open_upstream(
    net::ssl::context& tls, const UpstreamEndpoint& endpoint, std::chrono::milliseconds timeout) {
  const auto executor = co_await net::this_coro::executor;
  tcp::resolver resolver(executor);
  boost::system::error_code ec;
  auto stream = std::make_unique<ImapStream>(tcp::socket(executor), tls);

  // One deadline for resolve, connect and handshake: when it passes, the socket is closed and
  // whatever step is waiting fails. Declared after what it closes.
  const Deadline deadline(executor, timeout, [&resolver, socket = &stream->socket()] {
    resolver.cancel();
    boost::system::error_code ignored;
    socket->close(ignored);
  });

  const auto where = format_host_port(endpoint.host, endpoint.port);
  const auto results = co_await resolver.async_resolve(endpoint.host, std::to_string(endpoint.port),
                                                       net::redirect_error(net::use_awaitable, ec));
  if (ec) {
    co_return failure(UpstreamFailure::unavailable,
                      deadline.fired()
                          ? fmt::format("timed out resolving {}", endpoint.host)
                          : fmt::format("cannot resolve {}: {}", endpoint.host, ec.message()));
  }
  co_await net::async_connect(stream->socket(), results,
                              net::redirect_error(net::use_awaitable, ec));
  if (ec) {
    co_return failure(UpstreamFailure::unavailable,
                      deadline.fired()
                          ? fmt::format("timed out connecting to {}", where)
                          : fmt::format("cannot connect to {}: {}", where, ec.message()));
  }
  stream->socket().set_option(tcp::no_delay(true), ec);
  co_await stream->connect_tls(endpoint.host, ec);
  if (ec) {
    co_return failure(UpstreamFailure::unavailable,
                      deadline.fired()
                          ? fmt::format("timed out in the TLS handshake with {}", where)
                          : fmt::format("TLS with {} failed: {}", where, ec.message()));
  }
  co_return stream;
}

awaitable<std::expected<UpstreamConnection, UpstreamError>> connect_upstream(
    net::ssl::context& tls, UpstreamEndpoint endpoint, std::string user, Secret secret,
    bool is_password, UpstreamOptions options) {
  const auto executor = co_await net::this_coro::executor;
  const auto started = std::chrono::steady_clock::now();
  UpstreamLoginOptions login;
  login.user = std::move(user);
  login.secret = std::move(secret);
  login.is_password = is_password;
  login.probe = resolve_probe(options.probe, endpoint.host);
  login.where = format_host_port(endpoint.host, endpoint.port);
  // Whatever the outcome, the next login to this server finds a spare (when the policy says so).
  struct Replenish {
    SparePool* spares;
    const UpstreamEndpoint& endpoint;
    const net::any_io_executor& executor;
    ~Replenish() {
      if (spares != nullptr) {
        spares->replenish(endpoint, executor);
      }
    }
  } replenish{options.spares, endpoint, executor};

  LoginTrouble trouble;
  if (options.spares != nullptr) {
    auto spare = co_await options.spares->take(endpoint);
    if (spare) {
      spdlog::debug("upstream {}: logging in on a spare connection", login.where);
      auto result =
          co_await log_in(spare->stream, spare->received, login, options.timeout, trouble);
      // A spare the server ended just before we used it (its idle limit, a restart) must not
      // cost the client its login: once more on a fresh connection. An answer from the server
      // (refused, NO [UNAVAILABLE], BYE, protocol) or a timeout is the login's outcome: a
      // server in trouble does not get every login twice.
      if (result || !trouble.connection_lost || trouble.timed_out) {
        co_return result;
      }
      spdlog::info("upstream {}: the spare connection failed ({}); connecting afresh", login.where,
                   result.error().detail);
    }
  }
  auto opened = co_await open_upstream(tls, endpoint, options.timeout);
  if (!opened) {
    co_return std::unexpected(std::move(opened.error()));
  }
  // One budget for the whole exchange, as before the split.
  const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  const auto left = std::max(options.timeout - spent, std::chrono::milliseconds(1));
  const std::string nothing_read;
  co_return co_await log_in(*opened, nothing_read, login, left, trouble);
}

}  // namespace iop::proxy
