#pragma once
// What every proxied connection does whatever its protocol (IMAP sessions, SMTP submission):
// the client stream and, after login, the upstream one; the one pre-authentication deadline
// counted from accept; the connection-log record, its log line and its write; the relay; the
// close from the session registry; and getting a token for a login with the failure classified.
// The protocol sessions (session.cpp, smtp_session.cpp) only run their own state machine and
// say what to answer.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "auth/local_auth.hpp"
#include "auth/token_service.hpp"
#include "common/asio.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/relay.hpp"
#include "proxy/session.hpp"
#include "storage/audit_log.hpp"

namespace iop::proxy {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(SessionDeps deps, ListenerInfo listener, std::string id, tcp::socket socket);

  // Over capacity: the TLS handshake (implicit-TLS listener), `refusal`, close, record.
  awaitable<void> reject(std::string_view refusal);

  // After the protocol's pre-authentication part: relays when an upstream was set (idle limit
  // `idle_timeout`), else closes the client; then the log line and the connection-log row.
  awaitable<void> finish(std::chrono::milliseconds idle_timeout);

  // The TLS server handshake (implicit TLS or STARTTLS); false with the close reason set.
  awaitable<bool> accept_tls(std::string_view what);
  // Writes `bytes` to the client; false with the close reason set when it went away.
  awaitable<bool> send(std::string_view bytes);
  // After the login was answered: the upstream's bytes read after its login go to the client,
  // then the client's pipelined bytes go upstream. False when the client went away.
  awaitable<bool> forward_pending(const std::string& client_pending);

  // Sees every byte relayed after login, pending bytes included (see relay.hpp); and, at the
  // end, the messages to record (submission).
  void observe(RelayObserver observer, std::function<std::int64_t()> messages);

  // The pre-authentication deadline: armed at accept for the configured time; stopped while a
  // login runs (it has its own deadlines); re-armed after a failed one for what is left.
  void arm_preauth_timer();
  void pause_preauth_timer();
  // The pre-auth deadline passed: read no further command (a login's answer may still go out).
  [[nodiscard]] bool preauth_timed_out() const { return preauth_timed_out_; }
  // close_now() ended the connection (serve is shutting down).
  [[nodiscard]] bool closed_by_shutdown() const { return closed_by_shutdown_; }

  // A note the connection-log row's close reason starts with ("prewarmed upstream
  // connection; client closed").
  void set_login_note(std::string note) { login_note_ = std::move(note); }

  // From the session registry (on the session's strand): close both sides now.
  void close_now();
  void fail_internal(std::string_view what);
  // Hands the connection-log row to the writer (no I/O, no suspension).
  void write_audit();

  [[nodiscard]] storage::ConnectionRecord& record() { return record_; }
  [[nodiscard]] ImapStream& client() { return client_; }
  [[nodiscard]] std::unique_ptr<ImapStream>& upstream() { return upstream_; }
  [[nodiscard]] std::string& upstream_pending() { return upstream_pending_; }
  [[nodiscard]] const SessionDeps& deps() const { return deps_; }
  [[nodiscard]] const ListenerInfo& listener() const { return listener_; }
  [[nodiscard]] const std::string& id() const { return id_; }
  [[nodiscard]] bool loopback() const { return loopback_; }

 private:
  SessionDeps deps_;
  ListenerInfo listener_;
  std::string id_;
  ImapStream client_;
  std::unique_ptr<ImapStream> upstream_;
  std::string upstream_pending_;
  net::steady_timer preauth_timer_;
  std::optional<std::chrono::steady_clock::time_point> preauth_deadline_;
  std::uint64_t preauth_generation_ = 0;  // a fired-but-queued timer of an older arming is void
  storage::ConnectionRecord record_;
  std::chrono::steady_clock::time_point started_;
  bool loopback_ = false;
  bool preauth_timed_out_ = false;
  bool deadline_passed_in_login_ = false;  // the deadline ran out while a login was checked
  bool closed_by_shutdown_ = false;
  std::string login_note_;
  RelayObserver observer_;
  std::function<std::int64_t()> messages_;
};

// Runs `session` (which has reject(), run() and connection()) to its end with its close
// function in the registry; an exception still writes the connection-log row.
template <class Session>
awaitable<void> run_registered(std::shared_ptr<Session> session, std::string conn_id, bool reject) {
  const auto executor = co_await net::this_coro::executor;
  auto connection = session->connection();
  SessionRegistry& registry = connection->deps().registry;
  registry.add(conn_id, [executor, weak = std::weak_ptr<Connection>(connection)] {
    net::post(executor, [weak] {
      if (auto c = weak.lock()) {
        c->close_now();
      }
    });
  });
  struct Unregister {
    SessionRegistry& registry;
    std::string id;
    ~Unregister() { registry.remove(id); }
  } unregister{registry, conn_id};
  try {
    if (reject) {
      co_await session->reject();
    } else {
      co_await session->run();
    }
  } catch (const std::exception& e) {
    connection->fail_internal(e.what());
    connection->write_audit();  // no co_await: allowed in a handler
  }
}

// The token for one login, or why there is none, classified the same way for every protocol.
enum class TokenTrouble {
  none,
  needs_reauth,  // the refresh token is dead: `account reauth`
  temporary,     // token endpoint or database unavailable: try again later
  other,
};
struct LoginToken {
  Result<auth::FreshToken> token = fail(Errc::internal, "no token");
  TokenTrouble trouble = TokenTrouble::other;
  storage::ConnectionOutcome audit_outcome = storage::ConnectionOutcome::upstream_unavailable;
};
// A token for `email` (refreshed now when `force_refresh`); failures are logged for `conn_id`.
awaitable<LoginToken> login_token(auth::TokenService& tokens, const std::string& email,
                                  bool force_refresh, const std::string& conn_id);

// The message every needs_reauth answer carries.
std::string reauth_hint(std::string_view email);

// Adds how the connection ended to the audit row's close reason, after what a failed login put
// there ("upstream refused ...; client closed before login"): the later event must not erase
// why the login failed.
void add_close_reason(storage::ConnectionRecord& record, std::string_view what);

// A connection whose only refused logins acted for another user (AUTHENTICATE / AUTH PLAIN with
// another authorization identity, refused before any credential check) named no account: it
// is still a failed login, not a client that only looked.
void note_refused_authorization(storage::ConnectionRecord& record, std::size_t refusals);

}  // namespace iop::proxy
