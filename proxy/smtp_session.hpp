#pragma once
// One submission connection, start to end (issue #11): TLS (implicit, or STARTTLS), the
// ServerMachine until AUTH, the local password check, a token from the token service, the
// upstream SMTP login, the relay, and the connection-log row. The same accounts, token service,
// rate limits and connection log as the IMAP sessions.

#include <mutex>
#include <string>
#include <vector>

#include "common/asio.hpp"
#include "proxy/session.hpp"
#include "proxy/smtp_extensions.hpp"

namespace iop::proxy {

// What the listener advertises in EHLO comes from an upstream (RFC 5321 §4.1.1.1), but the
// account, and so its upstream, is only known after AUTH. The session takes the extensions its
// last successful upstream login saw (the default upstream's until then; baseline_extensions()
// before any), so clients see what the upstream they will reach offers. Thread-safe.
class SmtpExtensionCache {
 public:
  [[nodiscard]] std::vector<smtp::Extension> get() const;
  void set(std::vector<smtp::Extension> extensions);

 private:
  mutable std::mutex mutex_;
  std::vector<smtp::Extension> extensions_ = smtp::baseline_extensions();
};

// Runs the session to its end; never throws for network trouble; the audit row is written on
// every path. With `reject`, the client only gets 421 (max_connections).
awaitable<void> run_smtp_session(tcp::socket socket, SessionDeps deps, ListenerInfo listener,
                                 std::string conn_id, bool reject = false);

// Where an account's submission goes: its provider's SMTP upstream, else the default. Pure.
SmtpEndpoint smtp_upstream_for(const auth::LocalAuthOutcome& account,
                               const ProxySettings& settings);

}  // namespace iop::proxy
