#include "proxy/smtp_upstream_machine.hpp"

#include <fmt/format.h>

#include "auth/base64.hpp"

namespace iop::proxy::smtp {

namespace upstream {
std::string_view to_string(FailureKind kind) {
  switch (kind) {
    case FailureKind::unavailable:
      return "unavailable";
    case FailureKind::auth_rejected:
      return "auth_rejected";
    case FailureKind::protocol:
      return "protocol";
  }
  return "protocol";
}
}  // namespace upstream

using namespace upstream;

UpstreamLoginMachine::UpstreamLoginMachine(UpstreamLoginOptions options)
    : options_(std::move(options)), reader_(options_.limits), tls_active_(options_.tls_active) {}

std::vector<Action> UpstreamLoginMachine::feed(std::string_view bytes) {
  std::vector<Action> out;
  if (step_ == Step::finished || step_ == Step::tls) {
    return out;
  }
  received_ += bytes.size();
  if (received_ > options_.max_total_bytes) {
    fail(out, FailureKind::protocol,
         fmt::format("upstream sent more than {} bytes before the login completed",
                     options_.max_total_bytes));
    return out;
  }
  reader_.feed(bytes);
  while (step_ != Step::finished && step_ != Step::tls) {
    auto reply = reader_.next();
    if (!reply) {
      if (reader_.error()) {
        fail(out, FailureKind::protocol, "upstream reply: " + *reader_.error());
      }
      break;
    }
    on_reply(*reply, out);
  }
  return out;
}

std::vector<Action> UpstreamLoginMachine::on_tls_started() {
  std::vector<Action> out;
  if (step_ != Step::tls) {
    return out;
  }
  tls_active_ = true;
  // RFC 3207 §4.2: forget everything learnt before TLS, then EHLO again. Bytes the server sent
  // after its 220 and before the handshake are dropped for the same reason.
  reader_.take_buffered();
  extensions_.clear();
  send_ehlo(out);
  return out;
}

void UpstreamLoginMachine::send_ehlo(std::vector<Action>& out) {
  out.emplace_back(std::in_place_type<Send>,
                   Secret(fmt::format("EHLO {}\r\n", options_.ehlo_name)));
  step_ = Step::ehlo;
}

void UpstreamLoginMachine::on_reply(const Reply& reply, std::vector<Action>& out) {
  switch (step_) {
    case Step::greeting:
      if (reply.code != 220) {
        fail_reply(out, "greeting", reply);
        return;
      }
      send_ehlo(out);
      return;
    case Step::ehlo: {
      if (reply.code != 250) {
        fail_reply(out, "EHLO", reply);
        return;
      }
      extensions_ = parse_ehlo_reply(reply);
      if (!tls_active_) {
        if (find_extension(extensions_, "STARTTLS") == nullptr) {
          // Never send a token over plain text, whatever the server offers instead.
          fail(out, FailureKind::protocol,
               "upstream does not offer STARTTLS on a plain connection; set smtp_tls = "
               "\"implicit\" if this port is TLS from the start");
          return;
        }
        out.emplace_back(std::in_place_type<Send>, Secret(std::string_view("STARTTLS\r\n")));
        step_ = Step::starttls;
        return;
      }
      if (options_.mechanism.empty()) {
        step_ = Step::finished;
        out.emplace_back(std::in_place_type<Done>, std::move(extensions_), reader_.take_buffered());
        return;
      }
      if (!offers_sasl_mechanism(extensions_, options_.mechanism)) {
        fail(out, FailureKind::protocol,
             fmt::format("upstream does not offer AUTH {} (it offers: AUTH {})", options_.mechanism,
                         find_extension(extensions_, "AUTH") != nullptr
                             ? find_extension(extensions_, "AUTH")->params
                             : std::string("nothing")));
        return;
      }
      const std::string& ir = options_.initial_response.reveal();
      const std::size_t line = 5 + options_.mechanism.size() + 1 + ir.size() + 2;
      if (line <= options_.max_command_line) {
        out.emplace_back(std::in_place_type<Send>,
                         Secret(fmt::format("AUTH {} {}\r\n", options_.mechanism, ir)));
        step_ = Step::auth_result;
      } else {
        out.emplace_back(std::in_place_type<Send>,
                         Secret(fmt::format("AUTH {}\r\n", options_.mechanism)));
        step_ = Step::auth_continue;
      }
      return;
    }
    case Step::starttls:
      if (reply.code != 220) {
        fail_reply(out, "STARTTLS", reply);
        return;
      }
      step_ = Step::tls;
      out.emplace_back(std::in_place_type<StartTls>);
      return;
    case Step::auth_continue:
      if (reply.code != 334) {
        fail_reply(out, "AUTH", reply);
        return;
      }
      out.emplace_back(std::in_place_type<Send>,
                       Secret(options_.initial_response.reveal() + "\r\n"));
      step_ = Step::auth_result;
      return;
    case Step::auth_result:
      if (reply.code == 235) {
        step_ = Step::finished;
        out.emplace_back(std::in_place_type<Done>, std::move(extensions_), reader_.take_buffered());
        return;
      }
      if (reply.code == 334) {
        // The error challenge: a base64 JSON status ({"status":"401","schemes":"bearer",...}).
        // The client must answer with an empty response to get the final reply.
        if (auto decoded = auth::base64_decode(reply.text())) {
          challenge_ = std::move(*decoded);
        }
        out.emplace_back(std::in_place_type<Send>, Secret(std::string_view("\r\n")));
        step_ = Step::auth_final;
        return;
      }
      fail_reply(out, "AUTH", reply);
      return;
    case Step::auth_final:
      if (reply.code == 235) {  // not expected after an error challenge, but it is a success
        step_ = Step::finished;
        out.emplace_back(std::in_place_type<Done>, std::move(extensions_), reader_.take_buffered());
        return;
      }
      fail_reply(out, "AUTH", reply);
      return;
    case Step::tls:
    case Step::finished:
      return;
  }
}

void UpstreamLoginMachine::fail(std::vector<Action>& out, FailureKind kind, std::string detail,
                                int code) {
  step_ = Step::finished;
  out.emplace_back(std::in_place_type<Failed>, kind, std::move(detail), code);
}

void UpstreamLoginMachine::fail_reply(std::vector<Action>& out, std::string_view stage,
                                      const Reply& reply) {
  FailureKind kind = FailureKind::protocol;
  const bool auth =
      step_ == Step::auth_result || step_ == Step::auth_final || step_ == Step::auth_continue;
  if (reply.transient() || (reply.code == 554 && step_ == Step::greeting)) {
    // RFC 5321 §3.1: 554 instead of 220 means no service here; 4xx is temporary anywhere.
    kind = FailureKind::unavailable;
  } else if (auth && reply.code >= 500) {
    kind = FailureKind::auth_rejected;
  }
  std::string detail = fmt::format("{} answered {} {}", stage, reply.code, reply.text());
  if (!challenge_.empty()) {
    detail += fmt::format(" (challenge: {})", challenge_);
  }
  fail(out, kind, std::move(detail), reply.code);
}

}  // namespace iop::proxy::smtp
