#pragma once
// An SMTP server that keeps every message it receives: Python's aiosmtpd (Debian
// `python3-aiosmtpd`) with its Mailbox handler, writing a Maildir in a temporary folder. The
// last hop of the submission tests (client -> proxy -> Dovecot submission -> this sink).

#include <chrono>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace iop::test {

class SmtpSink {
 public:
  // Starts the sink on a free 127.0.0.1 port and waits (bounded) for its 220 greeting. Throws
  // std::runtime_error (with the sink's output) when it does not come up, or a message naming
  // the package when aiosmtpd is missing.
  SmtpSink();
  ~SmtpSink();
  SmtpSink(const SmtpSink&) = delete;
  SmtpSink& operator=(const SmtpSink&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // Every message delivered so far, as stored (aiosmtpd adds X-Peer, X-MailFrom and X-RcptTo
  // headers in front), oldest first by file time.
  [[nodiscard]] std::vector<std::string> messages() const;
  // Waits until at least `count` messages are there; false at `limit`.
  bool wait_for_messages(std::size_t count,
                         std::chrono::milliseconds limit = std::chrono::seconds(30)) const;

 private:
  TempDir dir_;
  int port_ = 0;
  Process process_;
};

// The body of an RFC 5322 message: what follows the first empty line.
std::string message_body(const std::string& message);

}  // namespace iop::test
