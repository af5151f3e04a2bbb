#include "tests/support/light_imap_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "auth/base64.hpp"
#include "certs/local_cert.hpp"
#include "certs/tls_context.hpp"
#include "common/ascii.hpp"
#include "common/asio.hpp"

namespace iop::test {

namespace {

// A line longer than this without CRLF ends the connection; XOAUTH2 responses stay far below.
constexpr std::size_t max_line_bytes = 64 * 1024;

const std::string caps_before_login = "IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE";
const std::string caps_after_login = "IMAP4rev1 IDLE";

// The user and the token of an XOAUTH2 message, "user=U^Aauth=Bearer T^A^A".
struct Xoauth2 {
  std::string user;
  std::string token;
};

std::optional<Xoauth2> parse_xoauth2(const std::string& message) {
  const std::string user_key = "user=";
  const std::string auth_key = "auth=Bearer ";
  if (message.rfind(user_key, 0) != 0) {
    return std::nullopt;
  }
  const auto user_end = message.find('\x01');
  if (user_end == std::string::npos ||
      message.compare(user_end + 1, auth_key.size(), auth_key) != 0) {
    return std::nullopt;
  }
  const auto token_start = user_end + 1 + auth_key.size();
  const auto token_end = message.find('\x01', token_start);
  if (token_end == std::string::npos || message.compare(token_end, 2, "\x01\x01") != 0) {
    return std::nullopt;
  }
  return Xoauth2{message.substr(user_key.size(), user_end - user_key.size()),
                 message.substr(token_start, token_end - token_start)};
}

// Frees the memory of an emptied buffer: an idle session keeps none.
void release_if_empty(std::string& s) {
  if (s.empty() && s.capacity() > 15) {
    std::string().swap(s);
  }
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("LightImapServer: " + what + ": " + std::strerror(errno));
}

}  // namespace

struct LightImapServer::Tls {
  std::shared_ptr<net::ssl::context> context;
};

struct LightImapServer::Connection {
  enum class State {
    handshake,
    not_authenticated,
    sasl_response,  // AUTHENTICATE sent "+ ": the client's response comes next
    sasl_failed,    // the failure challenge went out: the client's empty line comes next
    authenticated,
    idling,       // IDLE until DONE (RFC 2177)
    logging_out,  // closes once the output is written
  };
  int fd = -1;
  SSL* ssl = nullptr;
  State state = State::handshake;
  bool closed = false;
  bool counted_authenticated = false;
  std::uint32_t events = 0;
  std::string tag;  // of the AUTHENTICATE or IDLE in progress
  std::string in;
  std::string out;
};

LightImapServer::LightImapServer() : tls_(std::make_unique<Tls>()) {
  const auto cert = dir_.path() / "server.crt";
  const auto key = dir_.path() / "server.key";
  if (auto made = certs::ensure_server_certificate(cert, key); !made) {
    throw std::runtime_error("LightImapServer: certificate: " + made.error().message);
  }
  auto context = certs::make_server_context(cert, key);
  if (!context) {
    throw std::runtime_error("LightImapServer: TLS context: " + context.error().message);
  }
  tls_->context = std::move(*context);

  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    fail("socket");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;  // a free port, chosen by the kernel: no race with other tests
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, SOMAXCONN) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    fail("listen on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    fail("epoll/eventfd");
  }
  for (const int fd : {listen_fd_, wake_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      fail("epoll_ctl");
    }
  }
  thread_ = std::thread([this] { run(); });
}

LightImapServer::~LightImapServer() { stop(); }

std::filesystem::path LightImapServer::ca_file() const {
  return certs::ca_certificate_path(dir_.path() / "server.crt");
}

void LightImapServer::set_accepted_token(std::optional<std::string> token) {
  std::lock_guard lock(mutex_);
  accepted_token_ = std::move(token);
}

void LightImapServer::set_greeting_text(std::string text) {
  std::lock_guard lock(mutex_);
  greeting_text_ = std::move(text);
}

std::map<std::string, std::uint64_t> LightImapServer::logins_of() const {
  std::lock_guard lock(mutex_);
  return users_;
}

void LightImapServer::stop() {
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  for (int* fd : {&listen_fd_, &epoll_fd_, &wake_fd_}) {
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  }
}

void LightImapServer::run() {
  // A write to a connection the peer has reset must fail with EPIPE, not raise SIGPIPE in the
  // host process (a test binary or a benchmark): SIGPIPE is sent to the writing thread, and
  // this one blocks it.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);

  epoll_event events[256];
  for (bool running = true; running;) {
    const int n = ::epoll_wait(epoll_fd_, events, 256, -1);
    for (int i = 0; i < n && running; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        running = false;
      } else if (fd == listen_fd_) {
        accept_all();
      } else if (const auto it = connections_.find(fd); it != connections_.end()) {
        on_ready(*it->second, events[i].events);
        if (it->second->closed) {
          connections_.erase(it);
        }
      }
    }
  }
  for (auto& [fd, c] : connections_) {
    close(*c);
  }
  connections_.clear();
}

void LightImapServer::accept_all() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // Out of descriptors or memory: stop listening until a connection closes, rather than
        // spin on a listener that stays readable.
        ++accept_errors_;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        accepting_ = false;
      }
      return;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->ssl = SSL_new(tls_->context->native_handle());
    if (c->ssl == nullptr) {
      ::close(fd);
      ++accept_errors_;
      continue;
    }
    SSL_set_fd(c->ssl, fd);
    // A write may complete in parts and be retried from a moved buffer (std::string::erase).
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    ++live_;
    Connection& ref = *c;
    connections_.emplace(fd, std::move(c));
    watch(ref, EPOLLIN);
  }
}

void LightImapServer::watch(Connection& c, std::uint32_t events) {
  if (c.closed || c.events == events) {
    return;
  }
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = c.fd;
  ::epoll_ctl(epoll_fd_, c.events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c.fd, &ev);
  c.events = events;
}

void LightImapServer::on_ready(Connection& c, std::uint32_t /*events*/) {
  if (c.state == Connection::State::handshake) {
    handshake(c);
  } else {
    transfer(c);
  }
}

void LightImapServer::handshake(Connection& c) {
  const int r = SSL_accept(c.ssl);
  if (r != 1) {
    const int e = SSL_get_error(c.ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
      return watch(c, EPOLLIN);
    }
    if (e == SSL_ERROR_WANT_WRITE) {
      return watch(c, EPOLLOUT);
    }
    ERR_clear_error();
    return close(c);
  }
  c.state = Connection::State::not_authenticated;
  {
    std::lock_guard lock(mutex_);
    c.out = "* OK [CAPABILITY " + caps_before_login + "] " + greeting_text_ + "\r\n";
  }
  transfer(c);
}

// Writes what is pending, then reads and answers until the socket has nothing more; waits for
// writability only while output is stuck (no new input is read then: back-pressure).
void LightImapServer::transfer(Connection& c) {
  for (;;) {
    while (!c.out.empty()) {
      const int r = SSL_write(c.ssl, c.out.data(), static_cast<int>(c.out.size()));
      if (r <= 0) {
        const int e = SSL_get_error(c.ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
          return watch(c, e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN);
        }
        ERR_clear_error();
        return close(c);
      }
      c.out.erase(0, static_cast<std::size_t>(r));
    }
    release_if_empty(c.out);
    if (c.state == Connection::State::logging_out) {
      return close(c);
    }
    char buf[4096];
    const int r = SSL_read(c.ssl, buf, sizeof buf);
    if (r <= 0) {
      const int e = SSL_get_error(c.ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        release_if_empty(c.in);
        return watch(c, e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN);
      }
      ERR_clear_error();
      return close(c);  // close_notify, reset or EOF
    }
    c.in.append(buf, static_cast<std::size_t>(r));
    std::size_t start = 0;
    for (auto end = c.in.find("\r\n"); end != std::string::npos; end = c.in.find("\r\n", start)) {
      const std::string line = c.in.substr(start, end - start);
      start = end + 2;
      if (!on_line(c, line)) {
        return;  // closed
      }
    }
    c.in.erase(0, start);
    if (c.in.size() > max_line_bytes) {
      c.out += "* BYE line too long\r\n";
      c.state = Connection::State::logging_out;
    }
  }
}

// One line from the client in any state but the handshake; false once the connection is closed.
bool LightImapServer::on_line(Connection& c, const std::string& line) {
  using State = Connection::State;
  switch (c.state) {
    case State::sasl_response:
      // RFC 9051 §6.2.2: "*" cancels the exchange, answered with a tagged BAD.
      if (line == "*") {
        ++failed_logins_;
        c.out += c.tag + " BAD AUTHENTICATE cancelled\r\n";
        c.state = State::not_authenticated;
      } else {
        on_sasl(c, line);
      }
      return true;
    case State::sasl_failed:
      // RFC 7628 §3.2.3: after the error challenge the client sends a dummy (empty) response and
      // the server then fails the command.
      c.out += c.tag + " NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";
      c.state = State::not_authenticated;
      return true;
    case State::idling:
      // RFC 2177: only DONE ends IDLE.
      if (ascii_uppered(line) == "DONE") {
        c.out += c.tag + " OK IDLE terminated\r\n";
        c.state = State::authenticated;
      } else {
        c.out += "* BAD expected DONE\r\n";
      }
      return true;
    case State::logging_out:
      return true;  // nothing more is answered
    default:
      break;
  }
  const auto tag_end = line.find(' ');
  if (tag_end == std::string::npos || tag_end == 0) {
    c.out += "* BAD malformed command\r\n";
    return true;
  }
  const std::string tag = line.substr(0, tag_end);
  const auto name_end = line.find(' ', tag_end + 1);
  const std::string name = ascii_uppered(line.substr(tag_end + 1, name_end - tag_end - 1));
  const std::string args = name_end == std::string::npos ? "" : line.substr(name_end + 1);
  on_command(c, tag, name, args);
  return true;
}

void LightImapServer::on_command(Connection& c, const std::string& tag, const std::string& name,
                                 const std::string& args) {
  using State = Connection::State;
  const bool authenticated = c.state == State::authenticated;
  if (name == "CAPABILITY") {
    c.out += "* CAPABILITY " + (authenticated ? caps_after_login : caps_before_login) + "\r\n" +
             tag + " OK CAPABILITY completed\r\n";
  } else if (name == "NOOP") {
    c.out += tag + " OK NOOP completed\r\n";
  } else if (name == "LOGOUT") {
    c.out += "* BYE logging out\r\n" + tag + " OK LOGOUT completed\r\n";
    c.state = State::logging_out;
  } else if (name == "AUTHENTICATE" && !authenticated) {
    const auto space = args.find(' ');
    if (ascii_uppered(args.substr(0, space)) != "XOAUTH2") {
      c.out += tag + " NO unsupported authentication mechanism\r\n";
      return;
    }
    c.tag = tag;
    if (space == std::string::npos) {
      // RFC 4959: without an initial response the server asks for it with an empty challenge.
      c.out += "+ \r\n";
      c.state = State::sasl_response;
    } else {
      const std::string ir = args.substr(space + 1);
      on_sasl(c, ir == "=" ? std::string() : ir);
    }
  } else if (name == "LIST" && authenticated) {
    // Enough for `LIST "" ""` (RFC 9051 §6.3.9: the hierarchy delimiter and the root).
    ++lists_;
    c.out += "* LIST (\\Noselect) \"/\" \"\"\r\n" + tag + " OK LIST completed\r\n";
  } else if (name == "IDLE" && authenticated) {
    c.tag = tag;
    c.out += "+ idling\r\n";
    c.state = State::idling;
  } else {
    c.out += tag + " BAD command unknown or not allowed in this state\r\n";
  }
}

// The client's XOAUTH2 message (base64). A refused token gets the JSON error challenge first, as
// Google and Dovecot send it (RFC 7628 §3.2.2); a malformed message gets NO at once.
void LightImapServer::on_sasl(Connection& c, const std::string& base64) {
  using State = Connection::State;
  const auto decoded = auth::base64_decode(base64);
  const auto message = decoded ? parse_xoauth2(*decoded) : std::nullopt;
  if (!message) {
    ++failed_logins_;
    c.out += c.tag + " NO [AUTHENTICATIONFAILED] malformed XOAUTH2 message\r\n";
    c.state = State::not_authenticated;
    return;
  }
  bool accepted = false;
  {
    std::lock_guard lock(mutex_);
    accepted = !accepted_token_ || *accepted_token_ == message->token;
    if (accepted) {
      ++users_[message->user];
    }
  }
  if (!accepted) {
    ++failed_logins_;
    c.out += "+ " + auth::base64_encode(R"({"status":"401","schemes":"bearer","scope":"imap"})") +
             "\r\n";
    c.state = State::sasl_failed;
    return;
  }
  ++logins_;
  ++authenticated_;
  c.counted_authenticated = true;
  c.out += c.tag + " OK AUTHENTICATE completed\r\n";
  c.state = State::authenticated;
}

void LightImapServer::close(Connection& c) {
  if (c.closed) {
    return;
  }
  c.closed = true;
  if (c.counted_authenticated) {
    --authenticated_;
  }
  --live_;
  SSL_free(c.ssl);
  c.ssl = nullptr;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  if (!accepting_) {
    // A descriptor is free again (see accept_all()).
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listen_fd_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
    accepting_ = true;
  }
}

}  // namespace iop::test
