#include "proxy/upstream.hpp"

#include <spdlog/spdlog.h>

#include "auth/sasl.hpp"
#include "common/deadline.hpp"
#include "common/host_port.hpp"
#include "common/sanitize.hpp"
#include "proxy/imap_response.hpp"

namespace iop::proxy {

std::string_view to_string(UpstreamFailure failure) {
  switch (failure) {
    case UpstreamFailure::unavailable:
      return "unavailable";
    case UpstreamFailure::auth_rejected:
      return "auth_rejected";
    case UpstreamFailure::not_connected:
      return "not_connected";
    case UpstreamFailure::protocol:
      return "protocol";
  }
  return "unknown";
}

namespace {

// One response line, or one literal inside it.
constexpr std::size_t max_response_bytes = 1 << 20;
// Everything read from the server before the session is handed to the relay (greeting,
// CAPABILITY, the AUTHENTICATE or LOGIN exchange, the probe): real servers send a few KiB, so
// 4 MiB leaves room for any of them while a hostile server sending literal after literal (each
// under max_response_bytes) cannot make one login hold more memory than this.
constexpr std::size_t max_login_exchange_bytes = 4 << 20;

using Failure = std::unexpected<UpstreamError>;

// Concatenates `parts` into one Secret with a single allocation: no unwiped temporaries of a
// command that carries a password or token.
Secret secret_line(std::initializer_list<std::string_view> parts) {
  std::size_t size = 0;
  for (const auto part : parts) {
    size += part.size();
  }
  std::string out;
  out.reserve(size);
  for (const auto part : parts) {
    out += part;
  }
  return Secret(std::move(out));
}

Failure failure(UpstreamFailure kind, std::string detail) {
  return std::unexpected(UpstreamError{kind, std::move(detail)});
}

// Reads response lines, with any literals they announce folded in.
class LineReader {
 public:
  explicit LineReader(ImapStream& stream) : stream_(stream) {}

  // Bytes read past the last line returned (the server may speak first after the login).
  std::string take_rest() { return std::exchange(buffer_, {}); }

  // Whether the last failure was the max_login_exchange_bytes cap.
  [[nodiscard]] bool over_total_cap() const { return over_total_cap_; }

  awaitable<std::string> line(boost::system::error_code& ec) {
    std::string out;
    for (;;) {
      const auto end = buffer_.find("\r\n");
      if (end == std::string::npos) {
        if (buffer_.size() > max_response_bytes) {
          ec = net::error::message_size;
          co_return out;
        }
        co_await fill(ec);
        if (ec) {
          co_return out;
        }
        continue;
      }
      std::string part = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      const auto literal = trailing_literal_size(part);
      out += part;
      if (!literal) {
        co_return out;
      }
      if (*literal > max_response_bytes) {
        ec = net::error::message_size;
        co_return out;
      }
      while (buffer_.size() < *literal) {
        co_await fill(ec);
        if (ec) {
          co_return out;
        }
      }
      out += "\r\n";
      out += buffer_.substr(0, *literal);
      buffer_.erase(0, *literal);
    }
  }

 private:
  awaitable<void> fill(boost::system::error_code& ec) {
    if (total_read_ >= max_login_exchange_bytes) {
      over_total_cap_ = true;
      ec = net::error::message_size;
      co_return;
    }
    char chunk[4096];
    const auto n = co_await stream_.read_some(net::buffer(chunk), ec);
    total_read_ += n;
    buffer_.append(chunk, n);
  }

  ImapStream& stream_;
  std::string buffer_;
  std::size_t total_read_ = 0;  // every byte read so far, against max_login_exchange_bytes
  bool over_total_cap_ = false;
};

struct Exchange {
  ImapStream& stream;
  LineReader reader;
  boost::system::error_code ec;
  bool timed_out = false;
  int tag_number = 0;
  std::vector<std::string> seen_caps;  // from the last untagged CAPABILITY line

  [[nodiscard]] std::string next_tag() { return fmt::format("p{}", ++tag_number); }

  // Runs `command` and returns its tagged response; nullopt on an I/O failure.
  awaitable<std::optional<ResponseLine>> run(std::string command) {
    const auto tag = next_tag();
    const std::string request = tag + " " + command + "\r\n";  // named: see send()
    if (!co_await send(request)) {
      co_return std::nullopt;
    }
    for (;;) {
      auto line = co_await next();
      if (!line) {
        co_return std::nullopt;
      }
      if (auto c = capabilities_in(*line); c && line->kind == ResponseKind::untagged) {
        seen_caps = *c;
      }
      if (line->kind == ResponseKind::tagged && line->tag == tag) {
        co_return line;
      }
    }
  }

  awaitable<bool> send(std::string_view bytes) {
    co_await stream.write_all(net::buffer(bytes.data(), bytes.size()), ec);
    co_return !ec;
  }

  awaitable<std::optional<ResponseLine>> next() {
    const auto text = co_await reader.line(ec);
    if (ec) {
      co_return std::nullopt;
    }
    co_return parse_response_line(text);
  }

  [[nodiscard]] UpstreamError io_error(std::string_view step) const {
    if (reader.over_total_cap()) {
      return UpstreamError{
          UpstreamFailure::protocol,
          fmt::format("{}: the server sent more than {} MiB before the session started; "
                      "refused as broken or hostile (check the upstream host and port)",
                      step, max_login_exchange_bytes >> 20)};
    }
    return UpstreamError{UpstreamFailure::unavailable,
                         timed_out ? fmt::format("timed out during {}", step)
                                   : fmt::format("{} failed: {}", step, ec.message())};
  }
};

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

  Exchange x{*stream, LineReader(*stream), {}, false, 0, {}};
  auto io_failure = [&](std::string_view step) {
    x.timed_out = deadline.fired();
    return std::unexpected(x.io_error(fmt::format("{} with {}", step, where)));
  };

  // Greeting: * OK [CAPABILITY ...] ... (RFC 9051 §7.1.1).
  auto greeting = co_await x.next();
  if (!greeting) {
    co_return io_failure("reading the greeting");
  }
  if (greeting->status == "BYE") {
    co_return failure(
        UpstreamFailure::unavailable,
        fmt::format("{} refused the connection: {}", where, sanitize_for_log(greeting->text)));
  }
  if (greeting->kind != ResponseKind::untagged || greeting->status != "OK") {
    co_return failure(UpstreamFailure::protocol, fmt::format("unexpected greeting from {}", where));
  }
  auto caps = capabilities_in(*greeting).value_or(std::vector<std::string>{});

  if (caps.empty()) {
    auto done = co_await x.run("CAPABILITY");
    if (!done) {
      co_return io_failure("CAPABILITY");
    }
    caps = x.seen_caps;
  }

  // Authenticate. The command holding the secret is built in a Secret and written in one piece.
  x.seen_caps.clear();  // from here on, only post-login capabilities count
  const auto login_tag = x.next_tag();
  std::optional<ResponseLine> result;
  if (is_password) {
    const auto quoted_user = quote_string(user);
    auto quoted = quote_string(secret.reveal());
    const Secret quoted_pass(quoted ? std::move(*quoted) : std::string());
    if (!quoted_user || quoted_pass.empty()) {
      co_return failure(UpstreamFailure::protocol,
                        "the stored username or password holds characters LOGIN cannot carry");
    }
    if (has_capability(caps, "LOGINDISABLED")) {
      co_return failure(UpstreamFailure::auth_rejected,
                        fmt::format("{} does not accept LOGIN (LOGINDISABLED)", where));
    }
    const Secret command =
        secret_line({login_tag, " LOGIN ", *quoted_user, " ", quoted_pass.reveal(), "\r\n"});
    if (!co_await x.send(command.reveal())) {
      co_return io_failure("LOGIN");
    }
  } else {
    const Secret ir = auth::xoauth2_initial_response(user, secret);
    if (has_capability(caps, "SASL-IR")) {
      const Secret command =
          secret_line({login_tag, " AUTHENTICATE XOAUTH2 ", ir.reveal(), "\r\n"});
      if (!co_await x.send(command.reveal())) {
        co_return io_failure("AUTHENTICATE");
      }
    } else {
      const std::string command = login_tag + " AUTHENTICATE XOAUTH2\r\n";
      if (!co_await x.send(command)) {
        co_return io_failure("AUTHENTICATE");
      }
      auto ready = co_await x.next();
      if (!ready) {
        co_return io_failure("AUTHENTICATE");
      }
      if (ready->kind != ResponseKind::continuation) {
        result = ready;
      } else {
        const Secret response = secret_line({ir.reveal(), "\r\n"});
        if (!co_await x.send(response.reveal())) {
          co_return io_failure("AUTHENTICATE");
        }
      }
    }
  }
  bool challenged = false;
  while (!result) {
    auto line = co_await x.next();
    if (!line) {
      co_return io_failure("authentication");
    }
    if (line->kind == ResponseKind::continuation) {
      // A failure challenge (RFC 7628 §3.2.3; Dovecot and Gmail send one, Exchange does not):
      // the client must answer with an empty response before the server says NO.
      if (challenged) {
        co_return failure(UpstreamFailure::protocol, "unexpected continuation during login");
      }
      const bool sent = co_await x.send("\r\n");
      if (!sent) {
        co_return io_failure("authentication");
      }
      challenged = true;
      continue;
    }
    if (auto c = capabilities_in(*line); c && line->kind == ResponseKind::untagged) {
      x.seen_caps = *c;
    }
    if (line->kind == ResponseKind::untagged && line->status == "BYE") {
      co_return failure(
          UpstreamFailure::unavailable,
          fmt::format("{} closed the connection: {}", where, sanitize_for_log(line->text)));
    }
    if (line->kind == ResponseKind::tagged && line->tag == login_tag) {
      result = line;
    }
  }
  if (result->status != "OK") {
    const bool unavailable = result->code == "UNAVAILABLE";
    co_return failure(
        unavailable ? UpstreamFailure::unavailable : UpstreamFailure::auth_rejected,
        fmt::format(
            "{} refused the login: {} {}", where, sanitize_for_log(result->status),
            sanitize_for_log(result->code.empty() ? result->text
                                                  : "[" + result->code + "] " + result->text)));
  }

  // Post-login capabilities: from the tagged OK's code, an untagged line, or a new CAPABILITY.
  std::vector<std::string> post_caps = capabilities_in(*result).value_or(x.seen_caps);
  if (post_caps.empty()) {
    auto done = co_await x.run("CAPABILITY");
    if (!done) {
      co_return io_failure("CAPABILITY after login");
    }
    post_caps = x.seen_caps;
  }

  if (options.probe) {
    auto probe = co_await x.run("LIST \"\" \"\"");
    if (!probe) {
      co_return io_failure("the post-login probe");
    }
    if (probe->status != "OK") {
      co_return failure(
          UpstreamFailure::not_connected,
          fmt::format("{} accepted the login but not the session: {}", where,
                      sanitize_for_log(probe->text.empty() ? probe->status : probe->text)));
    }
  }
  co_return UpstreamConnection{std::move(stream), std::move(post_caps), x.reader.take_rest()};
}

}  // namespace iop::proxy
