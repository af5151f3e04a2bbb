#pragma once
// The proxy's side of an upstream SMTP submission login: greeting, EHLO, STARTTLS (RFC 3207)
// when the port needs it, EHLO again, then AUTH (RFC 4954) with XOAUTH2 (or PLAIN for accounts
// with a stored password). Pure, like the client-facing machines: the session moves the bytes.
//
//   start()           -> nothing (the server speaks first)
//   feed(bytes)       -> [Send]*, StartTls (then on_tls_started()), Done or Failed
//
// SASL-IR (the response on the AUTH line) only when the whole line fits the 512 octets every
// server must accept (RFC 5321 §4.5.3.1.4); otherwise "AUTH XOAUTH2" and the response on the
// 334 continuation (Dovecot refuses a 1,500-octet AUTH line; Exchange Online takes both). An
// error challenge (334 with a base64 JSON status, RFC 7628 §3.2.2) is answered with an empty
// line, after which the server sends its final failure.

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/secret.hpp"
#include "proxy/smtp_extensions.hpp"
#include "proxy/smtp_reply.hpp"

namespace iop::proxy::smtp {

struct UpstreamLoginOptions {
  // The connection is already TLS (implicit TLS, port 465). False: plain, STARTTLS first.
  bool tls_active = true;
  // The name in our EHLO (the client's, when usable).
  std::string ehlo_name = "localhost";
  // "XOAUTH2" or "PLAIN"; empty: a probe, Done after the EHLO (over TLS) without AUTH.
  std::string mechanism = "XOAUTH2";
  Secret initial_response;  // base64, as it goes on the wire
  std::size_t max_command_line = 512;
  ReplyLimits limits;
  // Everything the server may send before the login completes (issue #7 item 3).
  std::size_t max_total_bytes = 256 * 1024;
};

namespace upstream {

// Write these bytes to the server; `secret` bytes are wiped after the write.
struct Send {
  Secret bytes;
};
// The server said 220 to STARTTLS: TLS client handshake, then on_tls_started().
struct StartTls {};

enum class FailureKind {
  unavailable,    // 4xx, 421 greeting or 554 "no service": temporary, try later
  auth_rejected,  // 535 and other 5xx to AUTH: the token (or password) was refused
  protocol,       // no STARTTLS, no such AUTH mechanism, a reply we cannot follow
};
std::string_view to_string(FailureKind kind);

struct Done {
  std::vector<Extension> extensions;  // from the last EHLO (after TLS)
  std::string pending;                // server bytes after the 235; owed to the client
};
struct Failed {
  FailureKind kind = FailureKind::protocol;
  std::string detail;  // for logs: what happened, with the server's code and text (unsanitized)
  int code = 0;        // the server's reply code, 0 if none
};

using Action = std::variant<Send, StartTls, Done, Failed>;

}  // namespace upstream

class UpstreamLoginMachine {
 public:
  explicit UpstreamLoginMachine(UpstreamLoginOptions options);

  std::vector<upstream::Action> feed(std::string_view bytes);
  std::vector<upstream::Action> on_tls_started();
  [[nodiscard]] bool finished() const { return step_ == Step::finished; }

 private:
  enum class Step {
    greeting,
    ehlo,
    starttls,
    tls,  // waiting for on_tls_started()
    auth_continue,
    auth_result,
    auth_final,
    finished,
  };

  void on_reply(const Reply& reply, std::vector<upstream::Action>& out);
  void send_ehlo(std::vector<upstream::Action>& out);
  void fail(std::vector<upstream::Action>& out, upstream::FailureKind kind, std::string detail,
            int code = 0);
  void fail_reply(std::vector<upstream::Action>& out, std::string_view stage, const Reply& reply);

  UpstreamLoginOptions options_;
  ReplyReader reader_;
  Step step_ = Step::greeting;
  bool tls_active_ = false;
  std::size_t received_ = 0;
  std::vector<Extension> extensions_;
  std::string challenge_;  // the decoded error challenge, for the failure detail
};

}  // namespace iop::proxy::smtp
