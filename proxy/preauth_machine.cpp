#include "proxy/preauth_machine.hpp"

#include <utility>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "common/ascii.hpp"
#include "common/wipe.hpp"
#include "proxy/action_batch.hpp"
#include "proxy/responses.hpp"

namespace iop::proxy {
namespace {

// feed() hands the lexer at most this much at a time and consumes it before the next piece, so
// one large read (1 MB without a newline) is refused after max_line_bytes, not copied whole.
constexpr std::size_t feed_chunk = 4096;

// RFC 2971 §3.3: at most 30 field-value pairs.
constexpr std::size_t max_id_items = 60;

// Commands of the authenticated and selected states (RFC 9051 §6.3-6.4 and common extensions):
// answered "not allowed before login" rather than "unknown".
constexpr std::string_view post_login_commands[] = {
    "APPEND",    "CHECK",        "CLOSE",    "COMPRESS",    "COPY",       "CREATE", "DELETE",
    "DELETEACL", "ENABLE",       "EXAMINE",  "EXPUNGE",     "FETCH",      "GETACL", "GETMETADATA",
    "GETQUOTA",  "GETQUOTAROOT", "IDLE",     "LIST",        "LISTRIGHTS", "LSUB",   "MOVE",
    "MYRIGHTS",  "NAMESPACE",    "NOTIFY",   "RENAME",      "REPLACE",    "SEARCH", "SELECT",
    "SETACL",    "SETMETADATA",  "SETQUOTA", "SORT",        "STATUS",     "STORE",  "SUBSCRIBE",
    "THREAD",    "UID",          "UNSELECT", "UNSUBSCRIBE",
};

bool is_post_login_command(std::string_view name) {
  for (const auto candidate : post_login_commands) {
    if (candidate == name) {
      return true;
    }
  }
  return false;
}

// One write per batch of responses (proxy/action_batch.hpp).
void send(std::vector<Action>& out, std::string bytes) { append_send<Send>(out, std::move(bytes)); }

}  // namespace

LoginOutcome LoginOutcome::success(std::vector<std::string> capabilities) {
  LoginOutcome outcome;
  outcome.ok = true;
  outcome.capabilities = std::move(capabilities);
  return outcome;
}

LoginOutcome LoginOutcome::failed(LoginFailure failure, std::string message) {
  LoginOutcome outcome;
  outcome.ok = false;
  outcome.failure = failure;
  outcome.message = std::move(message);
  return outcome;
}

PreauthMachine::PreauthMachine(PreauthOptions options)
    : options_(options), lexer_(options_.limits), tls_active_(options_.tls_active) {}

std::vector<Action> PreauthMachine::start() {
  std::vector<Action> out;
  send(out, greeting(capabilities()));
  return out;
}

std::vector<Action> PreauthMachine::feed(std::string_view bytes) {
  std::vector<Action> out;
  while (!bytes.empty()) {
    if (state_ == State::awaiting_tls || state_ == State::authenticated ||
        state_ == State::closed) {
      // After STARTTLS, plaintext that arrived before the handshake is dropped: it could be a
      // command injected by a man in the middle (CVE-2011-0411; RFC 9051 §6.2.1).
      break;
    }
    const std::string_view piece = bytes.substr(0, feed_chunk);
    bytes.remove_prefix(piece.size());
    lexer_.feed(piece);
    pump(out);
  }
  return out;
}

std::vector<Action> PreauthMachine::on_tls_started() {
  if (state_ != State::awaiting_tls) {
    return {};
  }
  lexer_.reset();
  tls_active_ = true;
  state_ = State::reading;
  return {};
}

std::vector<Action> PreauthMachine::on_login_result(LoginOutcome outcome) {
  std::vector<Action> out;
  if (state_ != State::awaiting_credentials) {
    return out;
  }
  const std::string_view done =
      pending_method_ == LoginMethod::login ? "LOGIN completed" : "AUTHENTICATE completed";
  if (outcome.ok) {
    if (lexer_.overflowed()) {
      // Pipelined bytes were dropped while the login ran; relaying the rest would corrupt the
      // client's command stream.
      close("Too much pipelined input", CloseReason::protocol_error, out);
      return out;
    }
    // RFC 9051 §6.2.3: the tagged OK may carry the post-login capabilities, which spares the
    // client a CAPABILITY round trip and shows it IDLE, MOVE and the rest as the server offers.
    send(out, tagged_ok(pending_tag_, done,
                        outcome.capabilities.empty() ? std::string()
                                                     : capability_code(outcome.capabilities)));
    out.push_back(Authenticated{lexer_.take_buffered()});
    state_ = State::authenticated;
    return out;
  }
  state_ = State::reading;
  const std::string& message = outcome.message;
  switch (outcome.failure) {
    case LoginFailure::auth_failed:
      // RFC 5530 §3: AUTHENTICATIONFAILED.
      send(out, tagged_no(pending_tag_, message.empty() ? "Authentication failed" : message,
                          "AUTHENTICATIONFAILED"));
      login_failed(out);
      break;
    case LoginFailure::needs_reauth:
      send(out,
           tagged_no(pending_tag_, message.empty() ? "Account needs re-authorization" : message,
                     "AUTHENTICATIONFAILED"));
      login_failed(out);
      break;
    case LoginFailure::upstream_unavailable:
      // RFC 5530 §3: UNAVAILABLE, a temporary failure; not counted against the client.
      send(out,
           tagged_no(pending_tag_,
                     message.empty() ? "Upstream server unavailable, try again later" : message,
                     "UNAVAILABLE"));
      break;
    case LoginFailure::other:
      // RFC 5530 §3: CONTACTADMIN. Without a code, clients take a NO to LOGIN for a wrong
      // password and ask for a new one; this failure (the token endpoint's answer unusable, its
      // configuration refused) is for the operator.
      send(out,
           tagged_no(pending_tag_, message.empty() ? "Login failed" : message, "CONTACTADMIN"));
      break;
  }
  pump(out);
  return out;
}

std::vector<std::string> PreauthMachine::capabilities() const {
  std::vector<std::string> caps = {"IMAP4rev1", "LITERAL+", "SASL-IR", "ID"};
  if (!tls_active_ && options_.starttls_available) {
    caps.emplace_back("STARTTLS");
  }
  // RFC 9051 §6.2.3 / RFC 3501 §6.2.3: LOGINDISABLED while a login would be refused.
  caps.emplace_back(login_allowed() ? "AUTH=PLAIN" : "LOGINDISABLED");
  return caps;
}

bool PreauthMachine::login_allowed() const { return tls_active_ || options_.allow_plaintext_login; }

void PreauthMachine::pump(std::vector<Action>& out) {
  while (state_ == State::reading || state_ == State::awaiting_response_line) {
    LexResult result = lexer_.next();
    switch (result.status) {
      case LexStatus::need_more:
        return;
      case LexStatus::literal_wanted:
        handle_literal_wanted(result, out);
        break;
      case LexStatus::command:
        handle_command(std::move(result.command), out);
        break;
      case LexStatus::response_line:
        handle_response_line(result.line, out);
        break;
      case LexStatus::invalid:
        handle_invalid(result, out);
        break;
    }
  }
}

bool PreauthMachine::count_command(std::vector<Action>& out) {
  if (++commands_ > options_.max_commands) {
    close("Too many commands before login", CloseReason::too_many_commands, out);
    return false;
  }
  return true;
}

void PreauthMachine::handle_literal_wanted(const LexResult& result, std::vector<Action>& out) {
  const std::string& name = result.command.name;
  if (name == "LOGIN" || name == "AUTHENTICATE" || name == "ID") {
    if (name != "ID" && !login_allowed()) {
      // Refused before the client sends the password in clear text.
      lexer_.refuse_literal();
      if (count_command(out)) {
        send(out, tagged_no(result.tag, "Plaintext login is disabled: use STARTTLS first",
                            "PRIVACYREQUIRED"));
      }
      return;
    }
    send(out, continuation("Ready for literal data"));
    return;
  }
  // Nothing else is accepted before login, so its literal is not worth reading.
  lexer_.refuse_literal();
  if (count_command(out)) {
    bad(result.tag,
        is_post_login_command(name) ? "Command not allowed before login" : "Unknown command", out);
  }
}

void PreauthMachine::handle_command(Command command, std::vector<Action>& out) {
  if (!count_command(out)) {
    return;
  }
  const std::string& name = command.name;
  const std::string& tag = command.tag;
  if ((name == "CAPABILITY" || name == "NOOP" || name == "LOGOUT" || name == "STARTTLS") &&
      !command.args.empty()) {
    bad(tag, name + " takes no arguments", out);
    return;
  }
  if (name == "CAPABILITY") {
    send(out, capability_line(capabilities()) + tagged_ok(tag, "CAPABILITY completed"));
  } else if (name == "NOOP") {
    send(out, tagged_ok(tag, "NOOP completed"));
  } else if (name == "LOGOUT") {
    // RFC 9051 §6.1.3: untagged BYE, then the tagged OK, then the server closes.
    send(out, bye("imap-oauth2-proxy logging out") + tagged_ok(tag, "LOGOUT completed"));
    out.push_back(Close{CloseReason::logout});
    state_ = State::closed;
  } else if (name == "STARTTLS") {
    if (tls_active_) {
      bad(tag, "TLS is already active", out);
    } else if (!options_.starttls_available) {
      bad(tag, "STARTTLS is not available", out);
    } else {
      // RFC 9051 §6.2.1: the handshake starts after the tagged OK; see feed() for what happens
      // to bytes that arrive before it.
      send(out, tagged_ok(tag, "Begin TLS negotiation now"));
      out.push_back(StartTls{});
      state_ = State::awaiting_tls;
    }
  } else if (name == "ID") {
    handle_id(command, out);
  } else if (name == "LOGIN") {
    handle_login(command, out);
  } else if (name == "AUTHENTICATE") {
    handle_authenticate(command, out);
  } else if (is_post_login_command(name)) {
    bad(tag, "Command not allowed before login", out);
  } else {
    bad(tag, "Unknown command", out);
  }
}

void PreauthMachine::handle_invalid(const LexResult& result, std::vector<Action>& out) {
  if (state_ == State::awaiting_response_line) {
    state_ = State::reading;
  }
  const std::string_view text = to_string(result.error);
  // RFC 9051 §7.1: TOOBIG for a literal over the limit.
  const std::string_view code = result.error == LexError::literal_too_large ? "TOOBIG" : "";
  if (result.fatal) {
    send(out, result.tag.empty() ? untagged_bad(text) : tagged_bad(result.tag, text, code));
    close(text, CloseReason::protocol_error, out);
    return;
  }
  if (!count_command(out)) {
    return;
  }
  bad(result.tag, text, out, code);
}

void PreauthMachine::handle_response_line(const Secret& line, std::vector<Action>& out) {
  state_ = State::reading;
  const std::string tag = pending_tag_;
  if (line.reveal() == "*") {
    // RFC 9051 §6.2.2: a "*" cancels; the server answers with a tagged BAD.
    bad(tag, "AUTHENTICATE cancelled", out);
    return;
  }
  handle_plain_response(tag, line.reveal(), out);
}

void PreauthMachine::handle_id(const Command& command, std::vector<Action>& out) {
  // RFC 2971 §4: id = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring) ")" / nil.
  const auto& args = command.args;
  bool valid = false;
  if (args.size() == 1) {
    valid = args[0].is_nil();
  } else if (args.size() >= 2 && args.front().kind == ArgKind::list_begin &&
             args.back().kind == ArgKind::list_end) {
    const std::size_t items = args.size() - 2;
    valid = items % 2 == 0 && items <= max_id_items;
    for (std::size_t i = 1; valid && i + 1 < args.size(); ++i) {
      valid = args[i].is_string();
    }
  }
  if (!valid) {
    bad(command.tag, "ID expects NIL or a list of field-value pairs", out);
    return;
  }
  send(out, id_line() + tagged_ok(command.tag, "ID completed"));
}

void PreauthMachine::handle_login(Command& command, std::vector<Action>& out) {
  // RFC 9051 §6.2.3: login = "LOGIN" SP userid SP password; both are astrings.
  auto& args = command.args;
  if (args.size() != 2 || !args[0].is_string() || !args[1].is_string()) {
    bad(command.tag, "LOGIN expects a user name and a password", out);
    return;
  }
  if (!login_allowed()) {
    // RFC 5530 §3: PRIVACYREQUIRED; LOGINDISABLED is advertised meanwhile.
    send(out, tagged_no(command.tag, "Plaintext login is disabled: use STARTTLS first",
                        "PRIVACYREQUIRED"));
    return;
  }
  check_credentials(command.tag, std::string(args[0].value.reveal()), std::move(args[1].value),
                    LoginMethod::login, out);
}

void PreauthMachine::handle_authenticate(const Command& command, std::vector<Action>& out) {
  // RFC 9051 §6.2.2 with RFC 4959: authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp].
  const auto& args = command.args;
  if (args.empty() || args.size() > 2 || !args[0].is_string() ||
      (args.size() == 2 && !args[1].is_string())) {
    bad(command.tag, "AUTHENTICATE expects a mechanism and an optional initial response", out);
    return;
  }
  if (!ascii_iequals(args[0].value.reveal(), "PLAIN")) {
    send(out, tagged_no(command.tag, "Unsupported authentication mechanism"));
    return;
  }
  if (!login_allowed()) {
    send(out, tagged_no(command.tag, "Plaintext authentication is disabled: use STARTTLS first",
                        "PRIVACYREQUIRED"));
    return;
  }
  if (args.size() == 2) {
    // RFC 4959 §3: "=" is an initial response of zero length.
    std::string_view initial = args[1].value.reveal();
    if (initial == "=") {
      initial = {};
    }
    handle_plain_response(command.tag, initial, out);
    return;
  }
  // An empty challenge; the client's next line is its response (RFC 9051 §7.5).
  send(out, continuation());
  lexer_.expect_response_line();
  pending_tag_ = command.tag;
  pending_method_ = LoginMethod::authenticate_plain;
  state_ = State::awaiting_response_line;
}

void PreauthMachine::handle_plain_response(const std::string& tag, std::string_view base64,
                                           std::vector<Action>& out) {
  std::optional<std::string> decoded = auth::base64_decode(base64);
  if (!decoded) {
    // RFC 9051 §6.2.2: a response that cannot be decoded is rejected with BAD.
    bad(tag, "Invalid base64 in SASL response", out);
    return;
  }
  const Secret message(std::move(*decoded));
  secure_wipe(*decoded);
  auto parsed = auth::parse_plain(message.reveal());
  if (const auto* error = std::get_if<auth::PlainError>(&parsed)) {
    if (*error == auth::PlainError::authzid_mismatch) {
      // RFC 5530 §3: AUTHORIZATIONFAILED; counted as a failed login.
      send(out, tagged_no(tag, "Authorization identity must be empty or the user name",
                          "AUTHORIZATIONFAILED"));
      ++authorization_refusals_;
      login_failed(out);
      return;
    }
    bad(tag, "Malformed SASL PLAIN message", out);
    return;
  }
  auto& credentials = std::get<auth::PlainCredentials>(parsed);
  check_credentials(tag, std::move(credentials.authcid), std::move(credentials.password),
                    LoginMethod::authenticate_plain, out);
}

void PreauthMachine::check_credentials(const std::string& tag, std::string username,
                                       Secret password, LoginMethod method,
                                       std::vector<Action>& out) {
  username_ = username;
  pending_tag_ = tag;
  pending_method_ = method;
  out.push_back(CheckCredentials{tag, std::move(username), std::move(password), method});
  state_ = State::awaiting_credentials;
}

void PreauthMachine::bad(std::string_view tag, std::string_view text, std::vector<Action>& out,
                         std::string_view code) {
  send(out, tag.empty() ? untagged_bad(text) : tagged_bad(tag, text, code));
  if (++errors_ >= options_.max_errors) {
    close("Too many invalid commands", CloseReason::protocol_error, out);
  }
}

void PreauthMachine::login_failed(std::vector<Action>& out) {
  if (++failed_logins_ >= options_.max_failed_logins) {
    close("Too many authentication failures", CloseReason::too_many_login_failures, out);
  }
}

void PreauthMachine::close(std::string_view reason, CloseReason why, std::vector<Action>& out) {
  send(out, bye(reason));
  out.push_back(Close{why});
  state_ = State::closed;
}

}  // namespace iop::proxy
