#pragma once
// One client connection, start to end: TLS (implicit or STARTTLS), the pre-auth state machine,
// the local password check, a token from the token service, the upstream login, the relay, and
// the connection-log row. The coroutine is a small interpreter of PreauthMachine's actions.

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "auth/local_auth.hpp"
#include "auth/token_service.hpp"
#include "common/asio.hpp"
#include "proxy/smtp_upstream.hpp"
#include "proxy/upstream.hpp"
#include "storage/audit_log.hpp"
#include "storage/audit_writer.hpp"

namespace iop::proxy {

struct ProxySettings {
  std::chrono::milliseconds preauth_timeout{std::chrono::seconds(60)};
  // RFC 9051 §5.4: at least 30 minutes once authenticated.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(30)};
  bool allow_plaintext_loopback = false;
  int max_connections = 10000;
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(10)};
  UpstreamEndpoint default_upstream{"outlook.office365.com", 993};
  // Each provider profile's upstream; an account without its own upstream uses its provider's,
  // and one whose provider is not here (removed from the config) the default.
  std::map<std::string, UpstreamEndpoint, std::less<>> provider_upstreams;
  UpstreamOptions upstream;
  // Post-login capabilities clients must not see: by account email, "*" for every account.
  std::map<std::string, std::vector<std::string>> hide_capabilities;
  // Submission (issue #11): the default SMTP upstream and each provider profile's.
  SmtpEndpoint default_smtp{"smtp.office365.com", 587, SmtpTls::starttls};
  std::map<std::string, SmtpEndpoint, std::less<>> provider_smtp;
  // RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command.
  std::chrono::milliseconds smtp_idle_timeout{std::chrono::minutes(10)};
  // Our name in the SMTP greeting and EHLO reply.
  std::string hostname = "localhost";
};

class SessionRegistry;
class SmtpExtensionCache;
class UpstreamPool;

// Long-lived services a session uses; they outlive every session.
struct SessionDeps {
  auth::TokenService& tokens;
  auth::LocalAuthenticator& local_auth;
  net::ssl::context& server_tls;
  net::ssl::context& upstream_tls;
  const ProxySettings& settings;
  // Takes each connection's row (enqueue() only: no I/O, no waiting); null: no connection log.
  storage::AuditWriter* audit;
  SessionRegistry& registry;
  SmtpExtensionCache* smtp_extensions = nullptr;  // submission listeners: what EHLO advertises
  // Warm connections and per-account upstream limits (proxy/prewarm.hpp); null: neither.
  UpstreamPool* upstreams = nullptr;
};

enum class ListenerProtocol { imap, submission };

struct ListenerInfo {
  std::string name;  // "tls:127.0.0.1:1993", "submissions:[::1]:1465" (format_host_port)
  bool implicit_tls = true;
  ListenerProtocol protocol = ListenerProtocol::imap;
};

// Runs the session to its end. Never throws for network trouble; the audit row is written on
// every path. With `reject`, the client only gets `* BYE [UNAVAILABLE]` (max_connections).
awaitable<void> run_session(tcp::socket socket, SessionDeps deps, ListenerInfo listener,
                            std::string conn_id, bool reject = false);

// The live sessions, so `serve` can close them after a shutdown grace period.
class SessionRegistry {
 public:
  // Adds a session's close function (posted to the session's strand by close_all()).
  void add(const std::string& id, std::function<void()> close);
  void remove(const std::string& id);
  [[nodiscard]] std::size_t size();
  void close_all();

 private:
  std::mutex mutex_;
  std::map<std::string, std::function<void()>> sessions_;
};

// Where an account's upstream login goes: its own upstream, else its provider's, else the
// default. Pure.
UpstreamEndpoint upstream_for(const auth::LocalAuthOutcome& account, const ProxySettings& settings);

// Filters `caps` by the hide list for `email` (and "*"). Pure.
std::vector<std::string> visible_capabilities(
    const std::vector<std::string>& caps, const std::string& email,
    const std::map<std::string, std::vector<std::string>>& hide);

}  // namespace iop::proxy
