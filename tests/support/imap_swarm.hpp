#pragma once
// Many TLS IMAP client sessions from one thread: non-blocking sockets, epoll and OpenSSL, each
// session a small state machine (connect, handshake, greeting, login, then idle). For the
// "thousands of idle sessions" test and benchmark (issue #9): a thread per session would cost
// more than what is measured.

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace iop::test {

// A client context trusting only the PEM certificates in `ca_file`, peer verification on, TLS
// 1.2+, no session resumption (a full handshake every time); with `release_buffers`,
// SSL_MODE_RELEASE_BUFFERS (idle sessions hold no TLS buffers). Free it with SSL_CTX_free.
// Throws std::runtime_error when the file cannot be loaded.
SSL_CTX* new_client_tls_context(const std::filesystem::path& ca_file, bool release_buffers);

class ImapSwarm {
 public:
  enum class State { unused, connecting, handshake, greeting, login, ready, noop, noop_ok, failed };

  // `sessions` sessions to 127.0.0.1:`port` (none started yet), verifying the server as
  // "localhost" with `ctx` (not owned; must outlive the swarm). After the `* OK` greeting
  // session i sends login_commands[i % login_commands.size()] (tag "a", CRLF included, e.g.
  // "a LOGIN alice pass\r\n") and is ready on "a OK". Each session holds one descriptor.
  ImapSwarm(SSL_CTX* ctx, int port, int sessions, std::vector<std::string> login_commands);
  ~ImapSwarm();
  ImapSwarm(const ImapSwarm&) = delete;
  ImapSwarm& operator=(const ImapSwarm&) = delete;

  // Starts and logs in every session, at most `in_flight` logins at a time and at most one per
  // login command, until all are ready or failed or `limit` passes; returns how many are ready.
  // One login at a time per account, as a population of mail clients would log in: the proxy
  // delays an account's logins while several of them are in flight (auth/login_limiter.hpp, a
  // guessing defence), so more would measure that delay.
  int login_all(int in_flight, std::chrono::milliseconds limit);
  // Keeps servicing the sockets for `d` (TLS 1.3 tickets, a BYE, a close would show up here).
  void idle_for(std::chrono::milliseconds d);
  // NOOP (tag "b") on every ready session until all have answered or `limit` passes; returns
  // how many answered OK (those are in State::noop_ok, the others failed or still waiting).
  int noop_all(std::chrono::milliseconds limit);

  [[nodiscard]] int count(State state) const;
  // The first failed session's reason ("" when none failed).
  [[nodiscard]] std::string first_error() const;
  // Closes every session (close_notify not awaited).
  void close_all();

 private:
  struct Session;
  template <class F>
  void pump(std::chrono::milliseconds wait, F&& on_change);
  void start(std::size_t i);
  void set_events(Session& s, std::uint32_t events);
  void fail(Session& s, std::string why);
  void close(Session& s);
  void drive(Session& s);

  SSL_CTX* ctx_;
  int port_;
  std::vector<std::string> login_commands_;
  std::vector<Session> sessions_;
  int epoll_fd_ = -1;
};

}  // namespace iop::test
