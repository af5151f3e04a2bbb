#pragma once
// The not-authenticated state of one client connection (RFC 9051 §3.1, §6.1-6.2): CAPABILITY,
// NOOP, ID, LOGOUT, STARTTLS, LOGIN and AUTHENTICATE PLAIN (with SASL-IR, RFC 4959, or a
// continuation). Pure: bytes and the results of side effects go in, a list of actions comes out;
// the session performs them with real I/O and reports back (STYLE.md §3.4).
//
// The exchange, as the session sees it:
//   start()                      -> [Send greeting]
//   feed(bytes)                  -> [Send ...]*, then possibly one of
//                                   StartTls         -> handshake, then on_tls_started()
//                                   CheckCredentials -> check, upstream login, then
//                                                       on_login_result(outcome)
//                                   Close            -> close the connection
//   on_login_result(success)     -> [Send tagged OK [CAPABILITY ...], Authenticated{pending}]
// Consecutive Sends are merged into one, so each batch of responses is a single write.

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/secret.hpp"
#include "proxy/imap_command.hpp"
#include "proxy/imap_lexer.hpp"

namespace iop::proxy {

// How a connection starts and what it allows.
struct PreauthOptions {
  // The connection is already TLS (the implicit-TLS listener). False: the plain listener.
  bool tls_active = true;
  // On a plain connection, STARTTLS is offered (a TLS context exists).
  bool starttls_available = true;
  // LOGIN / AUTHENTICATE PLAIN are accepted without TLS (the loopback exception of the config).
  bool allow_plaintext_login = false;
  // Command lines (valid or not) before login; one more gets "* BYE" and Close.
  std::size_t max_commands = 30;
  // BAD responses; reaching this many gets "* BYE" and Close.
  std::size_t max_errors = 10;
  // Failed logins (auth_failed, needs_reauth, a refused authzid); reaching this many gets "* BYE"
  // and Close.
  std::size_t max_failed_logins = 3;
  LexerLimits limits;
};

// Write these bytes to the client.
struct Send {
  std::string bytes;
};

// The tagged OK for STARTTLS was sent (in an earlier Send): do the TLS server handshake on the
// same socket, then call on_tls_started(). Bytes received before the handshake are dropped.
struct StartTls {};

// Which command asked for a login (for logs and the connection record).
enum class LoginMethod { login, authenticate_plain };

// Check `username` and `password` (local hash, then token and upstream login), then call
// on_login_result(). The session applies the failure delay itself before reporting a failure.
struct CheckCredentials {
  std::string tag;
  std::string username;
  Secret password;
  LoginMethod method = LoginMethod::login;
};

// Login done and answered: start relaying. `pending` holds client bytes that arrived after the
// login command (pipelined); send them upstream first.
struct Authenticated {
  std::string pending;
};

// Why the machine ended the connection.
enum class CloseReason {
  logout,                   // the client said LOGOUT
  protocol_error,           // a fatal lexer error or too many BAD responses
  too_many_commands,        // max_commands exceeded
  too_many_login_failures,  // max_failed_logins reached
};

// Close the connection (after sending what came before). Nothing follows.
struct Close {
  CloseReason reason = CloseReason::protocol_error;
};

using Action = std::variant<Send, StartTls, CheckCredentials, Authenticated, Close>;

// Why a login failed, as the session reports it.
enum class LoginFailure {
  auth_failed,           // wrong user or password, or the upstream refused the token
  needs_reauth,          // the account's refresh token is dead
  upstream_unavailable,  // the upstream server or the token endpoint cannot be reached
  other,                 // anything else (NO [CONTACTADMIN]); `message` says what
};

// The result of a CheckCredentials.
struct LoginOutcome {
  bool ok = false;
  // ok: the upstream's post-login capabilities, as the client may see them.
  std::vector<std::string> capabilities;
  // !ok: the kind of failure and an optional client-facing message (no secrets, no internals).
  LoginFailure failure = LoginFailure::auth_failed;
  std::string message;

  static LoginOutcome success(std::vector<std::string> capabilities);
  static LoginOutcome failed(LoginFailure failure, std::string message = {});
};

class PreauthMachine {
 public:
  // Where the machine is.
  enum class State {
    reading,                 // reading commands
    awaiting_response_line,  // sent "+ " for AUTHENTICATE PLAIN; the client's response comes
    awaiting_credentials,    // emitted CheckCredentials; on_login_result() comes next
    awaiting_tls,            // emitted StartTls; on_tls_started() comes next
    authenticated,           // emitted Authenticated; the machine is done
    closed,                  // emitted Close; the machine is done
  };

  explicit PreauthMachine(PreauthOptions options = {});

  // The greeting: "* OK [CAPABILITY ...] imap-oauth2-proxy ready". Call once, when the client
  // should get it (at connect on the plain port, after the TLS handshake on the TLS port).
  std::vector<Action> start();

  // Bytes from the client. In awaiting_credentials they are kept for later; in awaiting_tls
  // (plaintext sent before the handshake: CVE-2011-0411 command injection), authenticated and
  // closed they are dropped.
  std::vector<Action> feed(std::string_view bytes);

  // The TLS handshake after StartTls succeeded. Forgets all buffered input; no greeting follows
  // (RFC 9051 §6.2.1) and the capabilities now include AUTH=PLAIN instead of STARTTLS.
  std::vector<Action> on_tls_started();

  // The result of the last CheckCredentials. Ignored in any other state.
  std::vector<Action> on_login_result(LoginOutcome outcome);

  // The capabilities advertised right now (RFC 9051 §7.2.2): IMAP4rev1 LITERAL+ SASL-IR ID, then
  // STARTTLS on a plain connection that offers it, then AUTH=PLAIN if a login can be accepted or
  // LOGINDISABLED if not (§6.2.3). Never AUTH=XOAUTH2: that is the upstream's business.
  [[nodiscard]] std::vector<std::string> capabilities() const;

  [[nodiscard]] State state() const { return state_; }
  // True once TLS is active (from the start or after STARTTLS).
  [[nodiscard]] bool tls_active() const { return tls_active_; }
  // BAD responses sent so far (each a protocol error by the client), for the connection record.
  [[nodiscard]] std::size_t errors() const { return errors_; }
  // AUTHENTICATE PLAIN messages refused for acting as another user, for the record: such a
  // login never names an account.
  [[nodiscard]] std::size_t authorization_refusals() const { return authorization_refusals_; }
  // The user name of the last login attempt, for the connection record; empty if none.
  [[nodiscard]] const std::string& username() const { return username_; }

 private:
  void pump(std::vector<Action>& out);
  bool count_command(std::vector<Action>& out);
  void handle_literal_wanted(const LexResult& result, std::vector<Action>& out);
  void handle_command(Command command, std::vector<Action>& out);
  void handle_invalid(const LexResult& result, std::vector<Action>& out);
  void handle_response_line(const Secret& line, std::vector<Action>& out);
  void handle_login(Command& command, std::vector<Action>& out);
  void handle_authenticate(const Command& command, std::vector<Action>& out);
  void handle_id(const Command& command, std::vector<Action>& out);
  void handle_plain_response(const std::string& tag, std::string_view base64,
                             std::vector<Action>& out);
  void check_credentials(const std::string& tag, std::string username, Secret password,
                         LoginMethod method, std::vector<Action>& out);
  void bad(std::string_view tag, std::string_view text, std::vector<Action>& out,
           std::string_view code = {});
  void login_failed(std::vector<Action>& out);
  void close(std::string_view reason, CloseReason why, std::vector<Action>& out);
  [[nodiscard]] bool login_allowed() const;

  PreauthOptions options_;
  ImapLexer lexer_;
  State state_ = State::reading;
  bool tls_active_ = false;
  std::size_t commands_ = 0;
  std::size_t errors_ = 0;
  std::size_t failed_logins_ = 0;
  std::size_t authorization_refusals_ = 0;
  std::string pending_tag_;  // the tag of the AUTHENTICATE or login being processed
  LoginMethod pending_method_ = LoginMethod::login;
  std::string username_;
};

}  // namespace iop::proxy
