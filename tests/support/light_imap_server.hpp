#pragma once
// A light upstream IMAP server for tests and benchmarks that need more sessions than Dovecot on
// this machine can hold (issue #9: 10,000 sessions in one proxy process). Implicit TLS on a free
// 127.0.0.1 port, one epoll thread, non-blocking OpenSSL: an idle session costs its SSL object
// (buffers released, SSL_MODE_RELEASE_BUFFERS) and a few dozen bytes, so 10,000 idle sessions fit
// in some tens of MiB.
//
// The protocol is the least a proxy needs (RFC 9051): the greeting
// `* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE] ready`, CAPABILITY, NOOP, LOGOUT,
// AUTHENTICATE XOAUTH2 (SASL-IR or continuation; a refused token gets the failure challenge
// first, as Dovecot and Gmail send, then NO [AUTHENTICATIONFAILED] after the client's empty
// line), and once authenticated LIST (one \Noselect answer, enough for the proxy's
// `LIST "" ""` probe) and IDLE/DONE. Anything else is answered BAD. It holds no mail.
//
// Real-server behaviour (quirks, limits, SASL details) stays Dovecot's job in the proxy tests.

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "tests/support/process.hpp"

namespace iop::test {

class LightImapServer {
 public:
  // Creates a local CA and a server certificate for localhost / 127.0.0.1 / ::1 (certs/
  // local_cert.hpp) in a temporary folder, listens on a free 127.0.0.1 port and starts the
  // server thread. Throws std::runtime_error when any of that fails.
  LightImapServer();
  // stop()
  ~LightImapServer();
  LightImapServer(const LightImapServer&) = delete;
  LightImapServer& operator=(const LightImapServer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // The CA certificate that signed the server's certificate: what a client (the proxy's
  // [upstream] ca_file) trusts. The server's names are "localhost", "127.0.0.1" and "::1".
  [[nodiscard]] std::filesystem::path ca_file() const;

  // Only `token` is accepted as XOAUTH2 bearer token from now on; nullopt (the default): any
  // token is. Either way the SASL user name is recorded (logins_of()).
  void set_accepted_token(std::optional<std::string> token);

  // The greeting's text after its capabilities, for connections accepted from now on (the
  // default: "light IMAP server ready"). "The Microsoft Exchange IMAP4 service is ready." makes
  // it look like Exchange to the proxy's probe choice ([upstream] probe = "auto").
  void set_greeting_text(std::string text);

  // LIST commands answered so far (the proxy's `LIST "" ""` probe, among others).
  [[nodiscard]] std::uint64_t lists() const { return lists_.load(); }

  // Connections open now, from accept to close (TLS handshakes included).
  [[nodiscard]] std::size_t live_sessions() const { return live_.load(); }
  // Connections open now that have logged in.
  [[nodiscard]] std::size_t authenticated_sessions() const { return authenticated_.load(); }
  // Successful AUTHENTICATE commands so far.
  [[nodiscard]] std::uint64_t logins() const { return logins_.load(); }
  // Refused AUTHENTICATE commands so far (bad token, bad SASL message, cancelled).
  [[nodiscard]] std::uint64_t failed_logins() const { return failed_logins_.load(); }
  // Successful logins so far by SASL user name.
  [[nodiscard]] std::map<std::string, std::uint64_t> logins_of() const;
  // accept() failures so far (EMFILE and the like): the server stops accepting until a
  // connection closes.
  [[nodiscard]] std::uint64_t accept_errors() const { return accept_errors_.load(); }

  // Closes every connection and the listener and joins the thread. Idempotent.
  void stop();

 private:
  struct Connection;
  struct Tls;
  void run();
  void accept_all();
  void on_ready(Connection& c, std::uint32_t events);
  void handshake(Connection& c);
  void transfer(Connection& c);
  bool on_line(Connection& c, const std::string& line);
  void on_command(Connection& c, const std::string& tag, const std::string& name,
                  const std::string& args);
  void on_sasl(Connection& c, const std::string& base64);
  void close(Connection& c);
  void watch(Connection& c, std::uint32_t events);

  TempDir dir_;
  std::unique_ptr<Tls> tls_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop() wakes the thread with it
  int port_ = 0;
  bool accepting_ = true;                                   // server thread only
  std::map<int, std::unique_ptr<Connection>> connections_;  // by fd; server thread only
  std::atomic<std::size_t> live_{0};
  std::atomic<std::size_t> authenticated_{0};
  std::atomic<std::uint64_t> logins_{0};
  std::atomic<std::uint64_t> failed_logins_{0};
  std::atomic<std::uint64_t> accept_errors_{0};
  std::atomic<std::uint64_t> lists_{0};
  mutable std::mutex mutex_;  // guards accepted_token_, users_ and greeting_text_
  std::optional<std::string> accepted_token_;
  std::map<std::string, std::uint64_t> users_;
  std::string greeting_text_ = "light IMAP server ready";
  std::thread thread_;
};

}  // namespace iop::test
