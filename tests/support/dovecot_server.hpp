#pragma once
// A real Dovecot 2.3 IMAP server (Debian `dovecot-imapd`) as the upstream test peer: started by
// the test with its own configuration, everything (config, TLS files, sockets, state, logs,
// maildirs) in a temporary folder, listening on 127.0.0.1 only. See ../../../shared/TESTING.md
// for Dovecot's quirks.
//
// Accounts:
// - any user, with `AUTHENTICATE XOAUTH2` or `OAUTHBEARER` and an access token the
//   introspection endpoint given to the constructor calls active (RFC 7662; the user is the
//   token's `email`), e.g. TokenEndpointPeer::introspect_url();
// - one password user (LOGIN / AUTHENTICATE PLAIN) named at construction.
// Every user gets a maildir on first use.
//
// Limits are raised for load tests: 10,000 connections per user and IP, 4,096 imap processes
// (one per session, Dovecot's recommended client_limit = 1), imap-login in high-performance
// mode (a few processes each proxying thousands of TLS sessions), and no failure delay. That
// holds 2,000+ idle TLS sessions (measured: under 1 MiB of memory each, all of Dovecot) and 200+
// simultaneous logins of one user on a 2-core machine.
//
// As root, Dovecot needs its system users `dovecot` and `dovenull` (created by the package);
// mail is owned by `nobody`. As another user, everything runs as that user.

#include <chrono>
#include <filesystem>
#include <string>

#include "tests/support/process.hpp"

namespace iop::test {

struct DovecotOptions {
  // Non-zero: also run Dovecot's submission service (Debian `dovecot-submissiond`, RFC 6409),
  // with AUTH XOAUTH2 checked by the same introspection as IMAP, relaying every accepted message
  // to an SMTP server on 127.0.0.1:`submission_relay_port` (a sink). See submission_port().
  int submission_relay_port = 0;
  // imap-login in high-performance mode (service_count = 0: a few processes, each terminating
  // TLS for thousands of clients) or, false, in Dovecot's default high-security mode
  // (service_count = 1: one login process per connection). They frame TLS records differently
  // (the shared processes send smaller ones), which matters for the relay's cost per MB.
  bool high_performance_login = true;
};

class DovecotServer {
 public:
  // Writes the configuration and a test certificate (a local CA and a server certificate for
  // localhost/127.0.0.1/::1, made by certs/), starts `dovecot -F` on two free ports and waits
  // (bounded) until both listeners accept and the plain one greets. `introspect_url` is where
  // the oauth2 passdb validates bearer tokens; `password_user`/`password` is the passwd-file
  // user. Throws std::runtime_error with the tail of Dovecot's log when it does not come up.
  DovecotServer(std::string introspect_url, std::string password_user, std::string password,
                DovecotOptions options = {});
  ~DovecotServer();
  DovecotServer(const DovecotServer&) = delete;
  DovecotServer& operator=(const DovecotServer&) = delete;

  // Implicit TLS port (imaps).
  [[nodiscard]] int imaps_port() const { return imaps_port_; }
  // Plain port with STARTTLS. Dovecot treats a client whose address equals its own
  // (127.0.0.1 -> 127.0.0.1) as secured: no LOGINDISABLED, plaintext LOGIN accepted. Connect
  // from another loopback address (bind the client to 127.0.0.2) to see what a real server
  // does: LOGINDISABLED until STARTTLS, LOGIN refused with NO [PRIVACYREQUIRED].
  [[nodiscard]] int imap_port() const { return imap_port_; }
  // With options.submission_relay_port: the submission port (plain, STARTTLS; like IMAP, Dovecot
  // allows AUTH in clear from 127.0.0.1) and the implicit-TLS one (RFC 8314). 0 without.
  [[nodiscard]] int submission_port() const { return submission_port_; }
  [[nodiscard]] int submissions_port() const { return submissions_port_; }
  // The CA certificate a client must trust to verify the server as `localhost` or 127.0.0.1.
  [[nodiscard]] std::filesystem::path ca_file() const;
  // The folder holding every user's maildir (`<mail_root>/<user>/Maildir`).
  [[nodiscard]] std::filesystem::path mail_root() const;

  // Whether the master process is still running.
  [[nodiscard]] bool running();
  // Stops Dovecot abruptly (SIGKILL to its whole process group, as a crash would) and waits
  // (bounded) until every one of its processes is gone, so the ports are free again. Open
  // sessions see their connection reset. No-op when stopped.
  void stop();
  // Starts it again on the same ports with the same mail, and waits as the constructor does.
  // No-op when running.
  void start();

  // Puts `rfc822_message` into `user`'s INBOX (`doveadm save`: indexes are updated, so an
  // IDLE-ing session is told at once). Creates the user's maildir when needed. Throws
  // std::runtime_error with doveadm's output on failure.
  void deliver(const std::string& user, const std::string& rfc822_message);
  // Ends every session of `user` (`doveadm kick`: the server closes them, as an admin or a
  // server restart would). Returns 1 when it kicked something, 0 when `user` had no session.
  // Throws std::runtime_error with doveadm's output on any other failure.
  std::size_t kick(const std::string& user);
  // How many successful IMAP logins of `user` Dovecot has logged ("Login: user=<...>").
  [[nodiscard]] std::size_t logins(const std::string& user) const;

  // Dovecot's log so far (its log file, then anything it wrote to stdout/stderr), for failure
  // messages. Holds no secret beyond test tokens Dovecot itself may print in debug (which is
  // off).
  [[nodiscard]] std::string log() const;

 private:
  void write_config();
  void wait_until_ready(std::chrono::milliseconds limit);
  std::string log_tail(std::size_t max_bytes) const;

  TempDir dir_;
  std::string introspect_url_;
  std::string password_user_;
  std::string password_;
  int imap_port_ = 0;
  int imaps_port_ = 0;
  DovecotOptions options_;
  int submission_port_ = 0;
  int submissions_port_ = 0;
  Process process_;
};

}  // namespace iop::test
