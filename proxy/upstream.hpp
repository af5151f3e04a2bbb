#pragma once
// The upstream connector: TLS to the real IMAP server (certificate and host name verified, SNI
// set), then AUTHENTICATE XOAUTH2 with an access token (or LOGIN with a stored password), then
// the post-login capabilities and a cheap probe. Used by the proxy and by get_imap_connection().
// The login protocol itself is UpstreamLoginMachine (pure); this file does the I/O.

#include <chrono>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "common/asio.hpp"
#include "common/secret.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/upstream_login_machine.hpp"

namespace iop::proxy {

class SparePool;

struct UpstreamEndpoint {
  std::string host;
  int port = 993;
};

struct UpstreamOptions {
  // The whole exchange, from connect to the probe's answer.
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  // After login, `LIST "" ""` catches Exchange Online's OK AUTHENTICATE followed by
  // `BAD User is authenticated but not connected` (a token for the wrong mailbox). By default
  // only against Exchange (Probe::exchange, resolved per host by resolve_probe()).
  Probe probe = Probe::exchange;
  // [upstream] preconnect: a login takes the server's spare connection (TLS already up) when
  // there is one, and the next spare is opened after it (proxy/spare_pool.hpp). Null: every
  // login connects afresh (the client library, tests).
  SparePool* spares = nullptr;
};

// UpstreamFailure and UpstreamError: proxy/upstream_login_machine.hpp.

struct UpstreamConnection {
  std::unique_ptr<ImapStream> stream;     // authenticated
  std::vector<std::string> capabilities;  // the server's post-login capabilities
  std::string pending;  // server bytes already read after the login: the client gets them first
};

// Resolves `endpoint`, connects and completes the TLS handshake (certificate and host name
// verified, SNI set) within `timeout`: the first half of connect_upstream, and how the spare
// pool opens its connections. The server's greeting is not read.
awaitable<std::expected<std::unique_ptr<ImapStream>, UpstreamError>> open_upstream(
    net::ssl::context& tls, const UpstreamEndpoint& endpoint, std::chrono::milliseconds timeout);

// Connects and authenticates as `user` with `secret`: an access token (XOAUTH2, SASL-IR when the
// server offers it, else a continuation; a failure challenge is answered with the empty line
// the protocol requires) or, with `is_password`, a password (LOGIN). Runs on the calling
// coroutine's executor. With options.spares, starts on the server's spare connection when
// there is one (falling back to a fresh connection if the server ends that one first).
awaitable<std::expected<UpstreamConnection, UpstreamError>> connect_upstream(
    net::ssl::context& tls, UpstreamEndpoint endpoint, std::string user, Secret secret,
    bool is_password, UpstreamOptions options);

}  // namespace iop::proxy
