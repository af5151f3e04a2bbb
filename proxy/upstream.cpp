#include "proxy/upstream.hpp"

#include <spdlog/spdlog.h>

#include "common/deadline.hpp"
#include "common/host_port.hpp"

namespace iop::proxy {

namespace {

using Failure = std::unexpected<UpstreamError>;

Failure failure(UpstreamFailure kind, std::string detail) {
  return std::unexpected(UpstreamError{kind, std::move(detail)});
}

}  // namespace

awaitable<std::expected<UpstreamConnection, UpstreamError>> connect_upstream(
    net::ssl::context& tls, UpstreamEndpoint endpoint, std::string user, Secret secret,
    bool is_password, UpstreamOptions options) {
  const auto executor = co_await net::this_coro::executor;
  tcp::resolver resolver(executor);
  boost::system::error_code ec;
  auto stream = std::make_unique<ImapStream>(tcp::socket(executor), tls);

  // One deadline for the whole exchange: when it passes, the socket is closed and whatever
  // step is waiting fails. It is disarmed when this frame ends (declared after what it closes).
  const Deadline deadline(executor, options.timeout, [&resolver, socket = &stream->socket()] {
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

  // The login protocol is the machine's; this loop moves bytes between it and the stream.
  UpstreamLoginOptions login;
  login.user = std::move(user);
  login.secret = std::move(secret);
  login.is_password = is_password;
  login.probe = options.probe;
  login.where = where;
  UpstreamLoginMachine machine(std::move(login));
  auto io_failure = [&](std::string_view step) {
    return failure(UpstreamFailure::unavailable,
                   deadline.fired()
                       ? fmt::format("timed out during {} with {}", step, where)
                       : fmt::format("{} with {} failed: {}", step, where, ec.message()));
  };
  std::vector<char> buffer(4096);
  for (;;) {
    const auto n = co_await stream->read_some(net::buffer(buffer), ec);
    if (ec) {
      co_return io_failure(machine.step());
    }
    auto actions = machine.feed(std::string_view(buffer.data(), n));
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

}  // namespace iop::proxy
