#include "proxy/smtp_upstream.hpp"

#include <fmt/format.h>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "common/deadline.hpp"
#include "common/host_port.hpp"
#include "common/sanitize.hpp"
#include "common/wipe.hpp"
#include "proxy/smtp_upstream_machine.hpp"

namespace iop::proxy {

std::string_view to_string(SmtpTls tls) {
  return tls == SmtpTls::implicit ? "implicit" : "starttls";
}

SmtpTls default_smtp_tls(int port) { return port == 465 ? SmtpTls::implicit : SmtpTls::starttls; }

namespace {

using Failure = std::unexpected<UpstreamError>;

Failure failure(UpstreamFailure kind, std::string detail) {
  return std::unexpected(UpstreamError{kind, std::move(detail)});
}

UpstreamFailure to_upstream_failure(smtp::upstream::FailureKind kind) {
  switch (kind) {
    case smtp::upstream::FailureKind::unavailable:
      return UpstreamFailure::unavailable;
    case smtp::upstream::FailureKind::auth_rejected:
      return UpstreamFailure::auth_rejected;
    case smtp::upstream::FailureKind::protocol:
      return UpstreamFailure::protocol;
  }
  return UpstreamFailure::protocol;
}

// RFC 4616: PLAIN's message is authzid NUL authcid NUL passwd; the authzid stays empty.
Secret plain_initial_response(std::string_view user, const Secret& password) {
  std::string raw;
  raw.reserve(user.size() + password.size() + 2);
  raw += '\0';
  raw += user;
  raw += '\0';
  raw += password.reveal();
  Secret encoded(auth::base64_encode(raw));
  secure_wipe(raw);
  return encoded;
}

// The exchange of one connection, start to end, under one deadline.
awaitable<std::expected<SmtpUpstreamConnection, UpstreamError>> run_exchange(
    net::ssl::context& tls, const SmtpEndpoint& endpoint, smtp::UpstreamLoginOptions options,
    std::chrono::milliseconds timeout) {
  const auto executor = co_await net::this_coro::executor;
  tcp::resolver resolver(executor);
  boost::system::error_code ec;
  auto stream = std::make_unique<ImapStream>(tcp::socket(executor), tls);

  // One deadline for the whole exchange: when it passes, the socket is closed (and the
  // resolver cancelled) and whatever step is waiting fails.
  Deadline deadline(executor, timeout, [&resolver, &stream] {
    resolver.cancel();
    boost::system::error_code ignored;
    stream->socket().close(ignored);
  });

  const auto where = format_host_port(endpoint.host, endpoint.port);
  auto io_failure = [&](std::string_view step) {
    return failure(UpstreamFailure::unavailable,
                   deadline.fired() ? fmt::format("timed out {} {}", step, where)
                                    : fmt::format("{} {}: {}", step, where, ec.message()));
  };
  const auto results = co_await resolver.async_resolve(endpoint.host, std::to_string(endpoint.port),
                                                       net::redirect_error(net::use_awaitable, ec));
  if (ec) {
    co_return io_failure("resolving");
  }
  co_await net::async_connect(stream->socket(), results,
                              net::redirect_error(net::use_awaitable, ec));
  if (ec) {
    co_return io_failure("connecting to");
  }
  stream->socket().set_option(tcp::no_delay(true), ec);
  if (endpoint.tls == SmtpTls::implicit) {
    co_await stream->connect_tls(endpoint.host, ec);
    if (ec) {
      co_return io_failure("in the TLS handshake with");
    }
  }
  options.tls_active = endpoint.tls == SmtpTls::implicit;
  smtp::UpstreamLoginMachine machine(std::move(options));
  std::vector<char> buffer(4096);
  for (;;) {
    const auto n = co_await stream->read_some(net::buffer(buffer), ec);
    if (ec) {
      co_return io_failure("reading from");
    }
    auto actions = machine.feed(std::string_view(buffer.data(), n));
    while (!actions.empty()) {
      std::vector<smtp::upstream::Action> next;
      for (auto& action : actions) {
        if (auto* send = std::get_if<smtp::upstream::Send>(&action)) {
          const std::string& bytes = send->bytes.reveal();
          co_await stream->write_all(net::buffer(bytes), ec);
          if (ec) {
            co_return io_failure("writing to");
          }
        } else if (std::holds_alternative<smtp::upstream::StartTls>(action)) {
          co_await stream->connect_tls(endpoint.host, ec);
          if (ec) {
            co_return io_failure("in the STARTTLS handshake with");
          }
          next = machine.on_tls_started();
          break;
        } else if (auto* done = std::get_if<smtp::upstream::Done>(&action)) {
          co_return SmtpUpstreamConnection{std::move(stream), std::move(done->extensions),
                                           std::move(done->pending)};
        } else if (auto* failed = std::get_if<smtp::upstream::Failed>(&action)) {
          co_return failure(to_upstream_failure(failed->kind),
                            fmt::format("{}: {}", where, sanitize_for_log(failed->detail)));
        }
      }
      actions = std::move(next);
    }
  }
}

}  // namespace

awaitable<std::expected<SmtpUpstreamConnection, UpstreamError>> connect_smtp_upstream(
    net::ssl::context& tls, SmtpEndpoint endpoint, std::string ehlo_name, std::string user,
    Secret secret, bool is_password, std::chrono::milliseconds timeout) {
  smtp::UpstreamLoginOptions options;
  options.ehlo_name = ehlo_name.empty() ? std::string("localhost") : std::move(ehlo_name);
  if (is_password) {
    options.mechanism = "PLAIN";
    options.initial_response = plain_initial_response(user, secret);
  } else {
    options.mechanism = "XOAUTH2";
    options.initial_response = auth::xoauth2_initial_response(user, secret);
  }
  if (options.initial_response.empty()) {
    co_return failure(UpstreamFailure::protocol,
                      "the account name or its token holds characters SASL cannot carry");
  }
  co_return co_await run_exchange(tls, endpoint, std::move(options), timeout);
}

awaitable<std::expected<std::vector<smtp::Extension>, UpstreamError>> probe_smtp_upstream(
    net::ssl::context& tls, SmtpEndpoint endpoint, std::chrono::milliseconds timeout) {
  smtp::UpstreamLoginOptions options;
  options.mechanism.clear();
  auto connection = co_await run_exchange(tls, endpoint, std::move(options), timeout);
  if (!connection) {
    co_return std::unexpected(connection.error());
  }
  boost::system::error_code ec;
  const std::string_view quit = "QUIT\r\n";
  co_await connection->stream->write_all(net::buffer(quit.data(), quit.size()), ec);
  co_await connection->stream->shutdown(std::chrono::seconds(1));
  co_return std::move(connection->extensions);
}

}  // namespace iop::proxy
