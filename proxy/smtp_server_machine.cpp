#include "proxy/smtp_server_machine.hpp"

#include <charconv>
#include <utility>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "common/ascii.hpp"
#include "common/line_limit.hpp"
#include "common/wipe.hpp"
#include "proxy/action_batch.hpp"

namespace iop::proxy::smtp {
namespace {

// While a login runs, a client may pipeline what follows AUTH; more than this is not a mail
// client but a flood, and the session closes instead of buffering it.
constexpr std::size_t max_pending_bytes = 64 * 1024;

// RFC 5321 §4.1.1.1: a domain or an address literal; used in our own EHLO upstream, so only
// what cannot change the meaning of that line passes.
std::string usable_client_name(std::string_view name) {
  if (name.empty() || name.size() > 255) {
    return {};
  }
  for (const char c : name) {
    const bool ok =
        is_ascii_alnum(c) || c == '-' || c == '.' || c == '[' || c == ']' || c == ':' || c == '_';
    if (!ok) {
      return {};
    }
  }
  return std::string(name);
}

// Mail commands, answered "authentication required" (RFC 4954 §6: 530 5.7.0) before AUTH.
bool is_mail_command(std::string_view verb) {
  return verb == "MAIL" || verb == "RCPT" || verb == "DATA" || verb == "BDAT" || verb == "VRFY" ||
         verb == "EXPN" || verb == "ETRN" || verb == "BURL";
}

// One write per batch of responses (proxy/action_batch.hpp).
void send(std::vector<Action>& out, std::string bytes) { append_send<Send>(out, std::move(bytes)); }

}  // namespace

ServerMachine::ServerMachine(ServerOptions options)
    : options_(std::move(options)), tls_active_(options_.tls_active) {}

std::vector<Action> ServerMachine::start() {
  std::vector<Action> out;
  reply(out, 220, options_.hostname + " ESMTP imap-oauth2-proxy ready");
  return out;
}

std::vector<Action> ServerMachine::feed(std::string_view bytes) {
  std::vector<Action> out;
  if (state_ == State::awaiting_tls || state_ == State::authenticated || state_ == State::closed) {
    // After STARTTLS, plaintext sent before the handshake is dropped: it could have been
    // injected by a man in the middle (CVE-2011-0411, RFC 3207 §4.2).
    return out;
  }
  if (state_ == State::awaiting_credentials) {
    if (buffer_.size() + bytes.size() > max_pending_bytes) {
      close(out, "4.7.0 Too much pipelined input", CloseReason::protocol_error);
      return out;
    }
    buffer_.append(bytes);
    return out;
  }
  buffer_.append(bytes);
  pump(out);
  return out;
}

std::vector<Action> ServerMachine::on_tls_started() {
  if (state_ != State::awaiting_tls) {
    return {};
  }
  secure_wipe(buffer_);
  discarding_ = false;
  discard_bytes_ = 0;
  tls_active_ = true;
  greeted_ = false;
  state_ = State::reading;
  return {};
}

std::vector<Action> ServerMachine::on_auth_result(AuthOutcome outcome) {
  std::vector<Action> out;
  if (state_ != State::awaiting_credentials) {
    return out;
  }
  if (outcome.ok) {
    reply(out, 235, "2.7.0 Authentication successful");
    state_ = State::authenticated;
    out.push_back(Authenticated{std::exchange(buffer_, {})});
    return out;
  }
  state_ = State::reading;
  switch (outcome.failure) {
    case AuthFailure::bad_credentials:
    case AuthFailure::needs_reauth:
      if (!refuse_auth(
              outcome.message.empty() ? "Authentication credentials invalid" : outcome.message,
              out)) {
        return out;
      }
      break;
    case AuthFailure::temporary:
      reply(out, 454,
            "4.7.0 " + (outcome.message.empty() ? std::string("Temporary authentication failure")
                                                : outcome.message));
      break;
    case AuthFailure::upstream_unavailable:
      close(out,
            "4.4.1 " + (outcome.message.empty() ? std::string("Upstream server unavailable")
                                                : outcome.message),
            CloseReason::unavailable);
      return out;
  }
  pump(out);
  return out;
}

bool ServerMachine::refuse_auth(std::string_view message, std::vector<Action>& out) {
  ++failed_auths_;
  reply(out, 535, "5.7.8 " + std::string(message));
  if (failed_auths_ >= options_.max_failed_auths) {
    close(out, "4.7.0 Too many failed authentications", CloseReason::too_many_auth_failures);
    return false;
  }
  return true;
}

std::vector<std::string> ServerMachine::extensions() const {
  const bool offer_starttls = !tls_active_ && options_.starttls_available;
  return advertised_extensions(options_.upstream_extensions, offer_starttls, auth_allowed());
}

bool ServerMachine::auth_allowed() const { return tls_active_ || options_.allow_plaintext_auth; }

void ServerMachine::pump(std::vector<Action>& out) {
  std::size_t used = 0;
  while (state_ != State::awaiting_credentials && state_ != State::awaiting_tls &&
         state_ != State::authenticated && state_ != State::closed) {
    std::string_view rest = std::string_view(buffer_).substr(used);
    if (discard_bytes_ > 0) {
      const auto skip = static_cast<std::size_t>(
          std::min<std::uint64_t>(discard_bytes_, static_cast<std::uint64_t>(rest.size())));
      discard_bytes_ -= skip;
      used += skip;
      if (discard_bytes_ > 0) {
        break;
      }
      continue;
    }
    const auto eol = rest.find('\n');
    if (eol == std::string_view::npos) {
      if (unfinished_line_too_long(rest, options_.max_line_bytes)) {
        // Drop the over-long line as it arrives; answer once its end is seen.
        if (!discarding_) {
          discarding_ = true;
        }
        used += rest.size();
      }
      break;
    }
    std::string_view line = rest.substr(0, eol);
    used += eol + 1;
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    // The same measure as unfinished_line_too_long: the content, without the CR (a bare-LF line
    // of max_line_bytes + 1 was accepted whole and refused when cut; smtp_fuzzer).
    if (discarding_ || line.size() > options_.max_line_bytes) {
      discarding_ = false;
      if (in_sasl_exchange()) {
        // RFC 4954 §4: the exchange ends here; what the client sends next is a command again,
        // not the user name or password the server would otherwise still be waiting for.
        state_ = State::reading;
        secure_wipe(login_user_);
        error(out, 500, "5.5.6 Authentication Exchange line is too long");
        continue;
      }
      error(out, 500, "5.5.2 Line too long");
      continue;
    }
    handle_line(line, out);
  }
  if (state_ == State::awaiting_tls || state_ == State::closed) {
    secure_wipe(buffer_);
    return;
  }
  // What was consumed may have held a password (an AUTH line): wipe it before it is reused.
  std::string rest = buffer_.substr(used);
  secure_wipe(buffer_);
  buffer_ = std::move(rest);
}

bool ServerMachine::in_sasl_exchange() const {
  return state_ == State::awaiting_plain || state_ == State::awaiting_login_user ||
         state_ == State::awaiting_login_pass;
}

void ServerMachine::handle_line(std::string_view line, std::vector<Action>& out) {
  if (in_sasl_exchange()) {
    handle_sasl_line(Secret(line), out);
    return;
  }
  if (++commands_ > options_.max_commands) {
    close(out, "4.7.0 Too many commands before authentication", CloseReason::too_many_commands);
    return;
  }
  handle_command(line, out);
}

void ServerMachine::handle_command(std::string_view line, std::vector<Action>& out) {
  const auto space = line.find(' ');
  const std::string verb = ascii_uppered(line.substr(0, space));
  std::string_view args =
      space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  while (!args.empty() && args.front() == ' ') {
    args.remove_prefix(1);
  }
  while (!args.empty() && args.back() == ' ') {
    args.remove_suffix(1);
  }
  if (verb == "EHLO" || verb == "HELO") {
    if (args.empty()) {
      error(out, 501, "5.5.4 Syntax: " + verb + " hostname");
      return;
    }
    greeted_ = true;
    client_name_ = usable_client_name(args.substr(0, args.find(' ')));
    if (verb == "HELO") {
      reply(out, 250, options_.hostname);
      return;
    }
    std::vector<std::string> lines{options_.hostname};
    for (auto& ext : extensions()) {
      lines.push_back(std::move(ext));
    }
    send(out, format_reply(250, lines));
    return;
  }
  if (verb == "STARTTLS") {
    if (!args.empty()) {
      error(out, 501, "5.5.4 Syntax: STARTTLS");
    } else if (tls_active_) {
      error(out, 503, "5.5.1 TLS already active");
    } else if (!options_.starttls_available) {
      error(out, 502, "5.5.1 STARTTLS not available");
    } else {
      reply(out, 220, "2.0.0 Ready to start TLS");
      state_ = State::awaiting_tls;
      out.push_back(StartTls{});
    }
    return;
  }
  if (verb == "AUTH") {
    handle_auth(args, out);
    return;
  }
  if (verb == "NOOP" || verb == "RSET") {
    reply(out, 250, "2.0.0 OK");
    return;
  }
  if (verb == "HELP") {
    reply(out, 214, "2.0.0 Authenticate with AUTH PLAIN or AUTH LOGIN, then send mail");
    return;
  }
  if (verb == "QUIT") {
    reply(out, 221, "2.0.0 Bye");
    state_ = State::closed;
    out.push_back(Close{CloseReason::quit});
    return;
  }
  if (is_mail_command(verb)) {
    if (verb == "BDAT") {
      // RFC 3030 §2: the chunk follows the command whatever the reply, so skip it rather than
      // read a message body as commands.
      const auto size_text = args.substr(0, args.find(' '));
      std::uint64_t size = 0;
      const auto [end, ec] =
          std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
      if (ec == std::errc() && end == size_text.data() + size_text.size()) {
        discard_bytes_ = size;
      }
    }
    reply(out, 530, "5.7.0 Authentication required");
    return;
  }
  error(out, 500, "5.5.2 Command not recognized");
}

void ServerMachine::handle_auth(std::string_view args, std::vector<Action>& out) {
  if (!greeted_) {
    error(out, 503, "5.5.1 Send EHLO first");
    return;
  }
  if (!auth_allowed()) {
    // RFC 3207 §4: 530 until the client has negotiated TLS.
    reply(out, 530, "5.7.0 Must issue a STARTTLS command first");
    return;
  }
  const auto space = args.find(' ');
  const std::string mechanism = ascii_uppered(args.substr(0, space));
  const std::string_view initial =
      space == std::string_view::npos ? std::string_view{} : args.substr(space + 1);
  const bool has_initial = space != std::string_view::npos;
  if (mechanism == "PLAIN") {
    if (!has_initial) {
      reply(out, 334, "");  // RFC 4954 §4: an empty challenge asks for the response
      state_ = State::awaiting_plain;
      return;
    }
    state_ = State::awaiting_plain;
    handle_sasl_line(Secret(initial), out);
    return;
  }
  if (mechanism == "LOGIN") {
    if (!has_initial) {
      reply(out, 334, "VXNlcm5hbWU6");  // base64("Username:")
      state_ = State::awaiting_login_user;
      return;
    }
    state_ = State::awaiting_login_user;
    handle_sasl_line(Secret(initial), out);
    return;
  }
  if (mechanism.empty()) {
    error(out, 501, "5.5.4 Syntax: AUTH mechanism");
    return;
  }
  error(out, 504, "5.5.4 Unrecognized authentication type");
}

void ServerMachine::handle_sasl_line(const Secret& line, std::vector<Action>& out) {
  const State was = state_;
  state_ = State::reading;
  if (line.reveal() == "*") {
    // RFC 4954 §4: the client cancels the exchange.
    error(out, 501, "5.0.0 Authentication canceled");
    return;
  }
  // "=" is an empty response (RFC 4954 §4); it decodes to nothing and fails below like any
  // malformed one.
  const std::string_view text = line.reveal() == "=" ? std::string_view{} : line.reveal();
  if (was == State::awaiting_plain) {
    auth::PlainError why = auth::PlainError::malformed;
    auto credentials = auth::decode_plain(text, &why);
    if (!credentials) {
      if (why == auth::PlainError::authzid_mismatch) {
        // Acting for another user is an authorization refusal, not a malformed response
        // (RFC 4954 §6: 535 5.7.8), and counts as a failed AUTH.
        ++authorization_refusals_;
        refuse_auth("Authorization identity must be empty or the user name", out);
        return;
      }
      error(out, 501, "5.5.2 Cannot decode the AUTH PLAIN response");
      return;
    }
    check(std::move(credentials->authcid), std::move(credentials->password), AuthMethod::plain,
          out);
    return;
  }
  std::optional<std::string> decoded = auth::base64_decode(text);
  if (!decoded || decoded->empty()) {
    if (decoded) {
      secure_wipe(*decoded);
    }
    error(out, 501, "5.5.2 Cannot decode the AUTH LOGIN response");
    return;
  }
  if (was == State::awaiting_login_user) {
    login_user_ = std::move(*decoded);
    reply(out, 334, "UGFzc3dvcmQ6");  // base64("Password:")
    state_ = State::awaiting_login_pass;
    return;
  }
  Secret password(std::move(*decoded));
  check(std::exchange(login_user_, {}), std::move(password), AuthMethod::login, out);
}

void ServerMachine::check(std::string username, Secret password, AuthMethod method,
                          std::vector<Action>& out) {
  username_ = username;
  state_ = State::awaiting_credentials;
  out.push_back(CheckCredentials{std::move(username), std::move(password), method, client_name_});
}

void ServerMachine::reply(std::vector<Action>& out, int code, std::string_view text) {
  send(out, format_reply(code, text));
}

void ServerMachine::error(std::vector<Action>& out, int code, std::string_view text) {
  reply(out, code, text);
  if (++errors_ >= options_.max_errors) {
    close(out, "4.7.0 Too many errors", CloseReason::protocol_error);
  }
}

void ServerMachine::close(std::vector<Action>& out, std::string_view text, CloseReason reason) {
  reply(out, 421, std::string(text) + ", closing connection");
  state_ = State::closed;
  out.push_back(Close{reason});
}

}  // namespace iop::proxy::smtp
