#pragma once
// The proxy's side of an upstream IMAP login (RFC 9051): the greeting, CAPABILITY when the
// greeting has none, then AUTHENTICATE XOAUTH2 with an access token (SASL-IR, RFC 4959, when the
// server offers it, else the response on the continuation) or LOGIN with a stored password, the
// tagged outcome, the post-login capabilities and the `LIST "" ""` probe. Pure, like the
// pre-auth machine and the SMTP upstream machine: proxy/upstream.cpp connects, does TLS and
// moves the bytes.
//
//   feed(bytes)  -> [Send]*, then Done or Failed (nothing more after either)
//
// The server speaks first, so there is no start(). An XOAUTH2 failure challenge (`+ <base64
// JSON>`, RFC 7628 §3.2.3; Dovecot and Gmail send one, Exchange Online does not) is answered with
// the empty line the protocol requires, after which the server sends its tagged NO. A BYE at any
// point ends the login as `unavailable`.
//
// Everything the server sends is framed by ResponseFramer (proxy/imap_response.hpp) with its
// limits checked byte by byte, so the same bytes cut into any reads give the same actions.

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/secret.hpp"
#include "proxy/imap_response.hpp"
#include "proxy/probe.hpp"

namespace iop::proxy {

enum class UpstreamFailure {
  unavailable,    // DNS, connect, TLS, timeout, server BYE: NO [UNAVAILABLE] for the client
  auth_rejected,  // the server refused the token or password
  not_connected,  // authenticated but the probe failed ("not connected")
  protocol,       // the server said something we cannot follow
};
std::string_view to_string(UpstreamFailure failure);

struct UpstreamError {
  UpstreamFailure kind = UpstreamFailure::unavailable;
  std::string detail;  // for logs and the client's NO text; never holds a secret
};

struct UpstreamLoginOptions {
  std::string user;
  Secret secret;  // the access token, or with is_password the password
  bool is_password = false;
  // After login, `LIST "" ""` catches Exchange Online's OK AUTHENTICATE followed by
  // `BAD User is authenticated but not connected` (a token for the wrong mailbox).
  Probe probe = Probe::exchange;
  // The server as "host:port", for the messages.
  std::string where;
  // One response line or literal (1 MiB), and everything the server sends before the session is
  // handed to the relay (4 MiB): real servers send a few KiB, while a hostile one sending literal
  // after literal cannot make one login hold more memory than this. Bytes after the last
  // response of the login (`pending`) do not count.
  FramerLimits limits;
};

namespace upstream_login {

// Write these bytes to the server, in one write. Those of the command carrying the token or the
// password are built in this Secret with a single allocation and wiped when it goes.
struct Send {
  Secret bytes;
  // The step this write belongs to, for the message when it fails ("LOGIN", "AUTHENTICATE").
  std::string_view step;
};

// Logged in (and the probe answered OK).
struct Done {
  std::vector<std::string> capabilities;  // the server's post-login capabilities
  // Server bytes after the login's last response in the bytes fed: the client gets them first.
  // Bytes read later belong to the client as well; the machine takes no more once done.
  std::string pending;
};

struct Failed {
  UpstreamError error;
};

using Action = std::variant<Send, Done, Failed>;

}  // namespace upstream_login

class UpstreamLoginMachine {
 public:
  explicit UpstreamLoginMachine(UpstreamLoginOptions options);

  // Bytes from the server, cut anywhere. Ignored once finished().
  std::vector<upstream_login::Action> feed(std::string_view bytes);

  // What the next read is for, for the message when it fails or times out ("reading the
  // greeting", "authentication", "the post-login probe").
  [[nodiscard]] std::string_view step() const;

  // Done or Failed was emitted.
  [[nodiscard]] bool finished() const { return step_ == Step::finished; }

 private:
  enum class Step {
    greeting,
    capability,     // CAPABILITY before login (the greeting had none)
    auth_continue,  // AUTHENTICATE XOAUTH2 without SASL-IR: waiting for "+"
    auth_result,    // the login command is out: waiting for its tagged response
    post_capability,
    probe,
    finished,
  };

  void on_response(const ResponseLine& line, std::vector<upstream_login::Action>& out);
  void on_auth(const ResponseLine& line, std::vector<upstream_login::Action>& out);
  void on_login_result(const ResponseLine& line, std::vector<upstream_login::Action>& out);
  void after_login(bool asked, std::vector<upstream_login::Action>& out);
  void login(std::vector<upstream_login::Action>& out);
  void command(std::string_view text, Step step, std::vector<upstream_login::Action>& out);
  void send(Secret bytes, std::string_view step, std::vector<upstream_login::Action>& out);
  void fail(UpstreamFailure kind, std::string detail, std::vector<upstream_login::Action>& out);
  std::string next_tag();
  [[nodiscard]] bool wants_probe() const;

  UpstreamLoginOptions options_;
  ResponseFramer framer_;
  Step step_ = Step::greeting;
  int tag_number_ = 0;
  std::string tag_;                     // the tag of the command in flight
  Secret initial_response_;             // XOAUTH2 without SASL-IR: sent on the continuation
  bool challenged_ = false;             // the failure challenge was answered
  bool done_ = false;                   // Done is due once the current response is handled
  bool exchange_ = false;               // the greeting names Microsoft Exchange
  std::vector<std::string> caps_;       // the greeting's or CAPABILITY's, then the post-login ones
  std::vector<std::string> seen_caps_;  // from the last untagged CAPABILITY of this step
};

}  // namespace iop::proxy
