#pragma once
// The SMTP upstream connector: TCP, TLS (implicit, or STARTTLS on the plain port) with the
// certificate and host name verified, then the UpstreamLoginMachine's EHLO and AUTH (XOAUTH2
// with an access token, PLAIN with a stored password). The submission session relays the
// connection it returns; doctor and the EHLO cache use the probe.

#include <chrono>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.hpp"
#include "common/secret.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/smtp_extensions.hpp"
#include "proxy/upstream.hpp"

namespace iop::proxy {

enum class SmtpTls { starttls, implicit };
std::string_view to_string(SmtpTls tls);
// RFC 8314 §3.3: 465 is implicit TLS; every other port (587, 25) starts plain with STARTTLS.
SmtpTls default_smtp_tls(int port);

struct SmtpEndpoint {
  std::string host;
  int port = 587;
  SmtpTls tls = SmtpTls::starttls;
};

struct SmtpUpstreamConnection {
  std::unique_ptr<ImapStream> stream;       // authenticated (or, from a probe, just EHLO-ed)
  std::vector<smtp::Extension> extensions;  // from the EHLO over TLS
  std::string pending;                      // server bytes after the 235, owed to the client
};

// Connects and authenticates as `user`: with `is_password` AUTH PLAIN with `secret`, else AUTH
// XOAUTH2 with the access token `secret`. `ehlo_name` goes into our EHLO. The whole exchange is
// bounded by `timeout`. Failures: unavailable (DNS, connect, TLS, 4xx, timeout), auth_rejected
// (5xx to AUTH), protocol (no STARTTLS or no such mechanism offered, unreadable replies).
awaitable<std::expected<SmtpUpstreamConnection, UpstreamError>> connect_smtp_upstream(
    net::ssl::context& tls, SmtpEndpoint endpoint, std::string ehlo_name, std::string user,
    Secret secret, bool is_password, std::chrono::milliseconds timeout);

// Connects, greets, negotiates TLS and returns the extensions of the EHLO over TLS; sends QUIT.
awaitable<std::expected<std::vector<smtp::Extension>, UpstreamError>> probe_smtp_upstream(
    net::ssl::context& tls, SmtpEndpoint endpoint, std::chrono::milliseconds timeout);

}  // namespace iop::proxy
