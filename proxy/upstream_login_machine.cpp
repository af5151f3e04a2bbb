#include "proxy/upstream_login_machine.hpp"

#include <fmt/format.h>

#include <initializer_list>
#include <utility>

#include "auth/sasl.hpp"
#include "common/ascii.hpp"
#include "common/sanitize.hpp"

namespace iop::proxy {

std::string_view to_string(UpstreamFailure failure) {
  switch (failure) {
    case UpstreamFailure::unavailable:
      return "unavailable";
    case UpstreamFailure::auth_rejected:
      return "auth_rejected";
    case UpstreamFailure::not_connected:
      return "not_connected";
    case UpstreamFailure::protocol:
      return "protocol";
  }
  return "unknown";
}

using namespace upstream_login;

namespace {

// Concatenates `parts` into one Secret with a single allocation: no unwiped temporaries of a
// command that carries a password or token.
Secret secret_line(std::initializer_list<std::string_view> parts) {
  std::size_t size = 0;
  for (const auto part : parts) {
    size += part.size();
  }
  std::string out;
  out.reserve(size);
  for (const auto part : parts) {
    out += part;
  }
  return Secret(std::move(out));
}

// "4 MiB" for the real limits, "256 bytes" for the small ones of the tests.
std::string size_text(std::size_t bytes) {
  constexpr std::size_t mib = std::size_t{1} << 20;
  return bytes != 0 && bytes % mib == 0 ? fmt::format("{} MiB", bytes / mib)
                                        : fmt::format("{} bytes", bytes);
}

// The capabilities a command's completion brings: those of its tagged line's code, else those of
// the last untagged CAPABILITY (RFC 9051 §7.1 allows either).
std::vector<std::string> caps_after(const ResponseLine& tagged, std::vector<std::string>& seen) {
  if (auto caps = capabilities_in(tagged)) {
    return std::move(*caps);
  }
  return std::move(seen);
}

}  // namespace

UpstreamLoginMachine::UpstreamLoginMachine(UpstreamLoginOptions options)
    : options_(std::move(options)), framer_(options_.limits) {}

std::string_view UpstreamLoginMachine::step() const {
  switch (step_) {
    case Step::greeting:
      return "reading the greeting";
    case Step::capability:
      return "CAPABILITY";
    case Step::auth_continue:
      return "AUTHENTICATE";
    case Step::auth_result:
      return "authentication";
    case Step::post_capability:
      return "CAPABILITY after login";
    case Step::probe:
      return "the post-login probe";
    case Step::finished:
      break;
  }
  return "the login";
}

std::vector<Action> UpstreamLoginMachine::feed(std::string_view bytes) {
  std::vector<Action> out;
  std::string_view in = bytes;
  while (step_ != Step::finished) {
    const auto status = framer_.next(in);
    if (status == ResponseFramer::Status::need_more) {
      break;
    }
    if (status == ResponseFramer::Status::line_too_long) {
      fail(UpstreamFailure::protocol,
           fmt::format("{} with {}: the server sent a response line or literal over {}; refused "
                       "as broken or hostile (check the upstream host and port)",
                       step(), options_.where, size_text(options_.limits.max_line_bytes)),
           out);
      break;
    }
    if (status == ResponseFramer::Status::over_total) {
      fail(UpstreamFailure::protocol,
           fmt::format("{} with {}: the server sent more than {} before the session started; "
                       "refused as broken or hostile (check the upstream host and port)",
                       step(), options_.where, size_text(options_.limits.max_total_bytes)),
           out);
      break;
    }
    const std::string text = framer_.take_response();
    const auto line = parse_response_line(text);
    if (!line) {
      fail(UpstreamFailure::protocol,
           step_ == Step::greeting ? fmt::format("unexpected greeting from {}: {}", options_.where,
                                                 sanitize_for_log(text))
                                   : fmt::format("{} with {}: not an IMAP response: \"{}\"", step(),
                                                 options_.where, sanitize_for_log(text)),
           out);
      break;
    }
    on_response(*line, out);
    if (done_) {
      // What follows the last response is the server speaking to the session already.
      step_ = Step::finished;
      out.emplace_back(std::in_place_type<Done>, std::move(caps_), std::string(in));
    }
  }
  return out;
}

void UpstreamLoginMachine::on_response(const ResponseLine& line, std::vector<Action>& out) {
  if (line.kind == ResponseKind::untagged && line.status == "BYE") {
    // RFC 9051 §7.1.5: the server is closing the connection (at the greeting: it will not serve
    // this one, e.g. too many connections).
    fail(UpstreamFailure::unavailable,
         fmt::format("{} {} the connection: {}", options_.where,
                     step_ == Step::greeting ? "refused" : "closed", sanitize_for_log(line.text)),
         out);
    return;
  }
  switch (step_) {
    case Step::greeting:
      // RFC 9051 §7.1.1: * OK [CAPABILITY ...] ...; PREAUTH would mean no login at all.
      if (line.kind != ResponseKind::untagged || line.status != "OK") {
        fail(UpstreamFailure::protocol,
             fmt::format("unexpected greeting from {}: {} {}", options_.where,
                         sanitize_for_log(line.kind == ResponseKind::tagged ? line.tag : "*"),
                         sanitize_for_log(line.status)),
             out);
        return;
      }
      // "* OK The Microsoft Exchange IMAP4 service is ready. [...]" (Exchange Online and
      // Exchange Server): for Probe::exchange.
      exchange_ = ascii_icontains(line.text, "Microsoft Exchange");
      caps_ = capabilities_in(line).value_or(std::vector<std::string>{});
      if (caps_.empty()) {
        command("CAPABILITY", Step::capability, out);
      } else {
        login(out);
      }
      return;
    case Step::auth_continue:
    case Step::auth_result:
      on_auth(line, out);
      return;
    case Step::capability:
    case Step::post_capability:
    case Step::probe:
      break;
    case Step::finished:
      return;
  }
  if (line.kind == ResponseKind::continuation) {
    fail(UpstreamFailure::protocol,
         fmt::format("{} with {}: unexpected continuation", step(), options_.where), out);
    return;
  }
  if (line.kind == ResponseKind::untagged) {
    if (auto caps = capabilities_in(line)) {
      seen_caps_ = std::move(*caps);
    }
    return;
  }
  if (line.tag != tag_) {
    return;  // not ours: nothing else is in flight, so nothing to wait for
  }
  if (step_ == Step::capability) {
    // A NO or BAD to CAPABILITY leaves no capabilities: the login then takes the paths that
    // need none (no SASL-IR: the continuation).
    caps_ = caps_after(line, seen_caps_);
    login(out);
  } else if (step_ == Step::post_capability) {
    // Asked once: a NO or BAD (Exchange in its "not connected" state) leaves them empty, and the
    // probe decides.
    caps_ = caps_after(line, seen_caps_);
    after_login(true, out);
  } else if (line.status != "OK") {
    // Exchange Online: `BAD User is authenticated but not connected.` after OK AUTHENTICATE.
    fail(UpstreamFailure::not_connected,
         fmt::format("{} accepted the login but not the session: {}", options_.where,
                     sanitize_for_log(line.text.empty() ? line.status : line.text)),
         out);
  } else {
    done_ = true;
  }
}

void UpstreamLoginMachine::login(std::vector<Action>& out) {
  seen_caps_.clear();  // from here on, only post-login capabilities count
  if (options_.is_password) {
    const auto quoted_user = quote_string(options_.user);
    auto quoted = quote_string(options_.secret.reveal());
    const Secret quoted_pass(quoted ? std::move(*quoted) : std::string());
    if (!quoted_user || quoted_pass.empty()) {
      fail(UpstreamFailure::protocol,
           "the stored username or password holds characters LOGIN cannot carry", out);
      return;
    }
    // RFC 9051 §6.2.3: LOGINDISABLED means LOGIN would be refused; do not send the password.
    if (has_capability(caps_, "LOGINDISABLED")) {
      fail(UpstreamFailure::auth_rejected,
           fmt::format("{} does not accept LOGIN (LOGINDISABLED)", options_.where), out);
      return;
    }
    tag_ = next_tag();
    send(secret_line({tag_, " LOGIN ", *quoted_user, " ", quoted_pass.reveal(), "\r\n"}), "LOGIN",
         out);
  } else {
    Secret ir = auth::xoauth2_initial_response(options_.user, options_.secret);
    if (ir.empty()) {
      fail(UpstreamFailure::protocol,
           "the account name or its token holds characters SASL cannot carry", out);
      return;
    }
    tag_ = next_tag();
    if (has_capability(caps_, "SASL-IR")) {
      send(secret_line({tag_, " AUTHENTICATE XOAUTH2 ", ir.reveal(), "\r\n"}), "AUTHENTICATE", out);
    } else {
      send(Secret(tag_ + " AUTHENTICATE XOAUTH2\r\n"), "AUTHENTICATE", out);
      initial_response_ = std::move(ir);
      step_ = Step::auth_continue;
      options_.secret = Secret();
      return;
    }
  }
  options_.secret = Secret();  // in the command sent; not needed any more
  step_ = Step::auth_result;
}

void UpstreamLoginMachine::on_auth(const ResponseLine& line, std::vector<Action>& out) {
  if (line.kind == ResponseKind::continuation) {
    if (step_ == Step::auth_continue) {
      send(secret_line({initial_response_.reveal(), "\r\n"}), "AUTHENTICATE", out);
      initial_response_ = Secret();
      step_ = Step::auth_result;
      return;
    }
    // A failure challenge (RFC 7628 §3.2.3): the client must answer with an empty response
    // before the server says NO. LOGIN has no continuation, and there is only one challenge.
    if (options_.is_password || challenged_) {
      fail(UpstreamFailure::protocol,
           fmt::format("unexpected continuation during login with {}", options_.where), out);
      return;
    }
    challenged_ = true;
    send(Secret(std::string_view("\r\n")), "authentication", out);
    return;
  }
  if (line.kind == ResponseKind::untagged) {
    if (auto caps = capabilities_in(line)) {
      seen_caps_ = std::move(*caps);
    }
    return;
  }
  if (line.tag != tag_) {
    return;
  }
  if (step_ == Step::auth_continue && line.status == "OK") {
    // XOAUTH2 cannot complete without its one response: a server that says OK first is not
    // one to hand a session to (found by upstream_login_fuzzer).
    fail(UpstreamFailure::protocol,
         fmt::format("{} answered OK to AUTHENTICATE before the credentials were sent",
                     options_.where),
         out);
    return;
  }
  on_login_result(line, out);
}

void UpstreamLoginMachine::on_login_result(const ResponseLine& line, std::vector<Action>& out) {
  initial_response_ = Secret();
  if (line.status != "OK") {
    // RFC 5530 §3: UNAVAILABLE is the server's trouble (Dovecot when its auth backend is
    // down), not a verdict on the token.
    const bool unavailable = ascii_iequals(line.code, "UNAVAILABLE");
    fail(unavailable ? UpstreamFailure::unavailable : UpstreamFailure::auth_rejected,
         fmt::format(
             "{} refused the login: {} {}", options_.where, sanitize_for_log(line.status),
             sanitize_for_log(line.code.empty() ? line.text : "[" + line.code + "] " + line.text)),
         out);
    return;
  }
  // Post-login capabilities: from the tagged OK's code, an untagged line, or a new CAPABILITY.
  caps_ = caps_after(line, seen_caps_);
  after_login(false, out);
}

void UpstreamLoginMachine::after_login(bool asked, std::vector<Action>& out) {
  if (caps_.empty() && !asked) {
    command("CAPABILITY", Step::post_capability, out);
  } else if (wants_probe()) {
    command("LIST \"\" \"\"", Step::probe, out);
  } else {
    done_ = true;
  }
}

void UpstreamLoginMachine::command(std::string_view text, Step step, std::vector<Action>& out) {
  seen_caps_.clear();
  tag_ = next_tag();
  step_ = step;
  send(Secret(fmt::format("{} {}\r\n", tag_, text)), this->step(), out);
}

void UpstreamLoginMachine::send(Secret bytes, std::string_view step, std::vector<Action>& out) {
  out.emplace_back(std::in_place_type<Send>, std::move(bytes), step);
}

void UpstreamLoginMachine::fail(UpstreamFailure kind, std::string detail,
                                std::vector<Action>& out) {
  step_ = Step::finished;
  options_.secret = Secret();
  initial_response_ = Secret();
  out.emplace_back(std::in_place_type<Failed>, UpstreamError{kind, std::move(detail)});
}

bool UpstreamLoginMachine::wants_probe() const {
  return options_.probe == Probe::always || (options_.probe == Probe::exchange && exchange_);
}

std::string UpstreamLoginMachine::next_tag() { return fmt::format("p{}", ++tag_number_); }

}  // namespace iop::proxy
