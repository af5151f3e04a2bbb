#pragma once
// The submission listener before authentication (RFC 6409 message submission on RFC 5321 SMTP):
// greeting, EHLO/HELO, STARTTLS (RFC 3207), AUTH PLAIN (RFC 4616) and AUTH LOGIN
// (draft-murchison-sasl-login) with or without an initial response (RFC 4954), NOOP, RSET, HELP,
// QUIT; mail commands are refused until AUTH succeeds. Pure, like the IMAP PreauthMachine: bytes
// and the results of side effects go in, actions come out (STYLE.md §3.4).
//
//   start()                 -> [Send 220 greeting]
//   feed(bytes)             -> [Send ...]*, then possibly one of
//                              StartTls         -> handshake, then on_tls_started()
//                              CheckCredentials -> local check, token, upstream AUTH, then
//                                                  on_auth_result(outcome)
//                              Close            -> close the connection
//   on_auth_result(success) -> [Send 235, Authenticated{pending}]
// Consecutive Sends are merged, so each batch of replies is one write (RFC 2920 §3.2).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/secret.hpp"
#include "proxy/smtp_extensions.hpp"

namespace iop::proxy::smtp {

struct ServerOptions {
  // Our name in the greeting and the EHLO reply.
  std::string hostname = "localhost";
  // The connection is TLS from the start (the implicit-TLS listener, RFC 8314).
  bool tls_active = true;
  // On a plain connection, STARTTLS is offered.
  bool starttls_available = true;
  // AUTH is accepted without TLS (the loopback exception of the config).
  bool allow_plaintext_auth = false;
  // What the upstream offers; filtered by advertised_extensions() for the EHLO reply.
  std::vector<Extension> upstream_extensions = baseline_extensions();
  // RFC 4954 §4: an AUTH command line (with its initial response) may take 12,288 octets; no
  // command of this state needs more.
  std::size_t max_line_bytes = 12288;
  // Command lines before AUTH succeeds; one more gets 421 and Close.
  std::size_t max_commands = 50;
  // Syntax errors and unknown commands; reaching this many gets 421 and Close.
  std::size_t max_errors = 10;
  // Failed AUTH attempts; reaching this many gets 421 and Close.
  std::size_t max_failed_auths = 3;
};

// Write these bytes to the client.
struct Send {
  std::string bytes;
};

// The 220 for STARTTLS was sent: do the TLS server handshake, then on_tls_started(). Bytes that
// arrived before the handshake are dropped (CVE-2011-0411, RFC 3207 §4.2).
struct StartTls {};

enum class AuthMethod { plain, login };

// Check the credentials, get a token, authenticate upstream; then on_auth_result().
struct CheckCredentials {
  std::string username;
  Secret password;
  AuthMethod method = AuthMethod::plain;
  // The client's EHLO/HELO argument, for the proxy's own EHLO upstream; empty if unusable.
  std::string client_name;
};

// AUTH succeeded and was answered: relay from now on. `pending` holds client bytes that came
// after the AUTH exchange (pipelined); they go upstream first.
struct Authenticated {
  std::string pending;
};

enum class CloseReason {
  quit,                    // the client said QUIT
  protocol_error,          // too many errors
  too_many_commands,       // max_commands exceeded
  too_many_auth_failures,  // max_failed_auths reached
  unavailable,             // a 421 after AUTH (upstream down): the channel closes (RFC 5321 §3.8)
};

struct Close {
  CloseReason reason = CloseReason::protocol_error;
};

using Action = std::variant<Send, StartTls, CheckCredentials, Authenticated, Close>;

enum class AuthFailure {
  bad_credentials,       // 535 5.7.8: wrong local password, or the upstream refused the token
  needs_reauth,          // 535 5.7.8 with the command that fixes it (in `message`)
  temporary,             // 454 4.7.0: token endpoint or database unavailable; AUTH may be retried
  upstream_unavailable,  // 421 4.4.1: the upstream cannot be reached; the connection closes
};

struct AuthOutcome {
  bool ok = false;
  AuthFailure failure = AuthFailure::bad_credentials;
  std::string message;  // client-facing text (no secrets); empty: the default for `failure`

  static AuthOutcome success() { return {true, AuthFailure::bad_credentials, {}}; }
  static AuthOutcome failed(AuthFailure failure, std::string message = {}) {
    return {false, failure, std::move(message)};
  }
};

class ServerMachine {
 public:
  enum class State {
    reading,               // reading commands
    awaiting_plain,        // sent "334 " for AUTH PLAIN; the response line comes
    awaiting_login_user,   // sent "334 VXNlcm5hbWU6" (Username:)
    awaiting_login_pass,   // sent "334 UGFzc3dvcmQ6" (Password:)
    awaiting_credentials,  // emitted CheckCredentials; on_auth_result() comes next
    awaiting_tls,          // emitted StartTls; on_tls_started() comes next
    authenticated,         // emitted Authenticated; done
    closed,                // emitted Close; done
  };

  explicit ServerMachine(ServerOptions options = {});

  // The 220 greeting. Once, at connect (plain) or after the handshake (implicit TLS).
  std::vector<Action> start();
  // Bytes from the client. Kept while awaiting_credentials; dropped while awaiting_tls,
  // authenticated and closed.
  std::vector<Action> feed(std::string_view bytes);
  // The STARTTLS handshake succeeded: buffered input is forgotten and the client must send
  // EHLO again (RFC 3207 §4.2); no new greeting.
  std::vector<Action> on_tls_started();
  // The result of the last CheckCredentials; ignored in any other state.
  std::vector<Action> on_auth_result(AuthOutcome outcome);

  // The extension lines of the EHLO reply right now.
  [[nodiscard]] std::vector<std::string> extensions() const;
  [[nodiscard]] State state() const { return state_; }
  [[nodiscard]] std::size_t errors() const { return errors_; }
  // AUTH PLAIN messages refused for acting as another user, for the connection record: such an
  // AUTH never names an account.
  [[nodiscard]] std::size_t authorization_refusals() const { return authorization_refusals_; }
  [[nodiscard]] const std::string& username() const { return username_; }

 private:
  void pump(std::vector<Action>& out);
  void handle_line(std::string_view line, std::vector<Action>& out);
  // AUTH PLAIN or LOGIN is waiting for the client's next response line.
  [[nodiscard]] bool in_sasl_exchange() const;
  void handle_command(std::string_view line, std::vector<Action>& out);
  void handle_auth(std::string_view args, std::vector<Action>& out);
  void handle_sasl_line(const Secret& line, std::vector<Action>& out);
  // 535 5.7.8 `message`, one more failed AUTH; false when that was the last one allowed (the
  // connection is closing).
  bool refuse_auth(std::string_view message, std::vector<Action>& out);
  void check(std::string username, Secret password, AuthMethod method, std::vector<Action>& out);
  void reply(std::vector<Action>& out, int code, std::string_view text);
  void error(std::vector<Action>& out, int code, std::string_view text);
  void close(std::vector<Action>& out, std::string_view text, CloseReason reason);
  [[nodiscard]] bool auth_allowed() const;

  ServerOptions options_;
  State state_ = State::reading;
  bool tls_active_ = false;
  bool greeted_ = false;  // EHLO or HELO seen since the start or the last STARTTLS
  std::string client_name_;
  std::string buffer_;
  bool discarding_ = false;          // inside an over-long line: drop up to its end
  std::uint64_t discard_bytes_ = 0;  // a refused BDAT's chunk still to skip (RFC 3030 §2)
  std::size_t commands_ = 0;
  std::size_t errors_ = 0;
  std::size_t failed_auths_ = 0;
  std::size_t authorization_refusals_ = 0;
  std::string username_;
  std::string login_user_;  // AUTH LOGIN: the user name while the password is asked for
};

}  // namespace iop::proxy::smtp
