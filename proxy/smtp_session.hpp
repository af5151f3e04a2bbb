#pragma once
// One submission connection, start to end (issue #11): TLS (implicit, or STARTTLS), the
// ServerMachine until AUTH, the local password check, a token from the token service, the
// upstream SMTP login, the relay, and the connection-log row. The same accounts, token service,
// rate limits and connection log as the IMAP sessions.

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/asio.hpp"
#include "proxy/session.hpp"
#include "proxy/smtp_extensions.hpp"

namespace iop::proxy {

// What the listener advertises in EHLO comes from an upstream (RFC 5321 §4.1.1.1), but the
// account, and so its upstream, is only known after AUTH. The cache keeps what each upstream
// advertised at its last successful login and offers what all of them share
// (smtp::common_extensions: the smallest SIZE; baseline_extensions() before any), so once every
// upstream has been reached since start, a client sees no extension, or larger SIZE, that its
// own upstream lacks. Thread-safe.
class SmtpExtensionCache {
 public:
  [[nodiscard]] std::vector<smtp::Extension> get() const;
  // `endpoint` ("host:port") advertised `extensions` at a login just now.
  void set(const std::string& endpoint, std::vector<smtp::Extension> extensions);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<smtp::Extension>> by_endpoint_;
  std::vector<smtp::Extension> shared_ = smtp::baseline_extensions();
};

// Runs the session to its end; never throws for network trouble; the audit row is written on
// every path. With `reject`, the client only gets 421 (max_connections).
awaitable<void> run_smtp_session(tcp::socket socket, SessionDeps deps, ListenerInfo listener,
                                 std::string conn_id, bool reject = false);

// Where an account's submission goes: its provider's SMTP upstream, else the default. Pure.
SmtpEndpoint smtp_upstream_for(const auth::LocalAuthOutcome& account,
                               const ProxySettings& settings);

}  // namespace iop::proxy
