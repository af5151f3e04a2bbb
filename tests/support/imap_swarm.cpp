#include "tests/support/imap_swarm.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace iop::test {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// While alive, a write to a connection the peer has closed fails with EPIPE instead of killing
// the process with SIGPIPE (OpenSSL writes with write(2), not send(MSG_NOSIGNAL)). A SIGPIPE
// raised meanwhile is consumed before the thread's mask is restored.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlock() {
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) == 1) {
      const timespec zero{0, 0};
      sigtimedwait(&pipe_, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
};

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

}  // namespace

SSL_CTX* new_client_tls_context(const std::filesystem::path& ca_file, bool release_buffers) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    throw std::runtime_error("SSL_CTX_new failed");
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
    SSL_CTX_free(ctx);
    ERR_clear_error();
    throw std::runtime_error("cannot load the CA file " + ca_file.string());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);  // a full handshake every time
  if (release_buffers) {
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  }
  return ctx;
}

struct ImapSwarm::Session {
  int fd = -1;
  SSL* ssl = nullptr;
  State state = State::unused;
  std::string in;
  std::string out;
  std::uint32_t events = 0;
  std::string error;
};

ImapSwarm::ImapSwarm(SSL_CTX* ctx, int port, int sessions, std::vector<std::string> login_commands)
    : ctx_(ctx),
      port_(port),
      login_commands_(std::move(login_commands)),
      sessions_(static_cast<std::size_t>(sessions)) {
  if (login_commands_.empty()) {
    throw std::invalid_argument("ImapSwarm: no login command");
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
  }
}

ImapSwarm::~ImapSwarm() {
  close_all();
  ::close(epoll_fd_);
}

void ImapSwarm::close_all() {
  for (auto& s : sessions_) {
    close(s);
  }
}

int ImapSwarm::login_all(int in_flight, std::chrono::milliseconds limit) {
  const SigpipeBlock no_sigpipe;
  const auto deadline = Clock::now() + limit;
  const std::size_t commands = login_commands_.size();
  // Session i uses command i % commands; next_of[k] is the next session of command k to start,
  // busy[k] whether one of them is logging in.
  std::vector<std::size_t> next_of(commands);
  for (std::size_t k = 0; k < commands; ++k) {
    next_of[k] = k;
  }
  std::vector<bool> busy(commands, false);
  int active = 0;
  const auto settled = [&](const Session& s) {
    return s.state == State::ready || s.state == State::failed;
  };
  while (Clock::now() < deadline) {
    for (std::size_t k = 0; k < commands && active < in_flight; ++k) {
      if (busy[k] || next_of[k] >= sessions_.size()) {
        continue;
      }
      const std::size_t i = next_of[k];
      next_of[k] += commands;
      start(i);
      if (!settled(sessions_[i])) {
        busy[k] = true;
        ++active;
      }
    }
    if (active == 0) {
      break;
    }
    pump(100ms, [&](Session& s, State before) {
      if (before != s.state && settled(s)) {
        busy[static_cast<std::size_t>(&s - sessions_.data()) % commands] = false;
        --active;
      }
    });
  }
  return count(State::ready);
}

void ImapSwarm::idle_for(std::chrono::milliseconds d) {
  const SigpipeBlock no_sigpipe;
  const auto deadline = Clock::now() + d;
  while (Clock::now() < deadline) {
    pump(50ms, [](Session&, State) {});
  }
}

int ImapSwarm::noop_all(std::chrono::milliseconds limit) {
  const SigpipeBlock no_sigpipe;
  int pending = 0;
  for (auto& s : sessions_) {
    if (s.state != State::ready) {
      continue;
    }
    s.state = State::noop;
    s.out = "b NOOP\r\n";
    ++pending;
    drive(s);
    if (s.state == State::noop_ok || s.state == State::failed) {
      --pending;
    }
  }
  const auto deadline = Clock::now() + limit;
  while (pending > 0 && Clock::now() < deadline) {
    pump(100ms, [&](Session& s, State before) {
      if (before == State::noop && s.state != State::noop) {
        --pending;
      }
    });
  }
  return count(State::noop_ok);
}

int ImapSwarm::count(State state) const {
  return static_cast<int>(std::count_if(sessions_.begin(), sessions_.end(),
                                        [state](const Session& s) { return s.state == state; }));
}

std::string ImapSwarm::first_error() const {
  for (const auto& s : sessions_) {
    if (s.state == State::failed) {
      return s.error;
    }
  }
  return "";
}

void ImapSwarm::start(std::size_t i) {
  Session& s = sessions_[i];
  s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s.fd < 0) {
    s.state = State::failed;
    s.error = std::string("socket: ") + std::strerror(errno);
    return;
  }
  const int one = 1;
  ::setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const auto addr = loopback(port_);
  if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 &&
      errno != EINPROGRESS) {
    return fail(s, std::string("connect: ") + std::strerror(errno));
  }
  s.state = State::connecting;
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u64 = i;
  s.events = EPOLLOUT;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s.fd, &ev);
}

template <class F>
void ImapSwarm::pump(std::chrono::milliseconds wait, F&& on_change) {
  epoll_event evs[256];
  const int n = ::epoll_wait(epoll_fd_, evs, 256, static_cast<int>(wait.count()));
  for (int k = 0; k < n; ++k) {
    Session& s = sessions_[evs[k].data.u64];
    const auto before = s.state;
    drive(s);
    on_change(s, before);
  }
}

void ImapSwarm::set_events(Session& s, std::uint32_t events) {
  if (s.fd < 0 || s.events == events) {
    return;
  }
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = static_cast<std::uint64_t>(&s - sessions_.data());
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, s.fd, &ev);
  s.events = events;
}

void ImapSwarm::fail(Session& s, std::string why) {
  if (s.state != State::failed) {
    s.error = std::move(why);
  }
  s.state = State::failed;
  close(s);
}

void ImapSwarm::close(Session& s) {
  if (s.ssl != nullptr) {
    SSL_free(s.ssl);
    s.ssl = nullptr;
  }
  if (s.fd >= 0) {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, s.fd, nullptr);
    ::close(s.fd);
    s.fd = -1;
  }
}

// Advances `s` as far as its socket allows, then waits for the event it needs.
void ImapSwarm::drive(Session& s) {
  if (s.state == State::connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == EINPROGRESS) {
      return;
    }
    if (err != 0) {
      return fail(s, std::string("connect: ") + std::strerror(err));
    }
    s.ssl = SSL_new(ctx_);
    SSL_set_fd(s.ssl, s.fd);
    SSL_set_tlsext_host_name(s.ssl, "localhost");
    SSL_set1_host(s.ssl, "localhost");
    s.state = State::handshake;
  }
  if (s.state == State::handshake) {
    const int r = SSL_connect(s.ssl);
    if (r != 1) {
      const int e = SSL_get_error(s.ssl, r);
      if (e == SSL_ERROR_WANT_READ) {
        return set_events(s, EPOLLIN);
      }
      if (e == SSL_ERROR_WANT_WRITE) {
        return set_events(s, EPOLLOUT);
      }
      ERR_clear_error();
      return fail(s, "TLS handshake failed");
    }
    s.state = State::greeting;
  }
  if (s.state == State::failed || s.state == State::unused) {
    return;
  }
  for (;;) {
    if (!s.out.empty()) {
      const int r = SSL_write(s.ssl, s.out.data(), static_cast<int>(s.out.size()));
      if (r <= 0) {
        const int e = SSL_get_error(s.ssl, r);
        if (e == SSL_ERROR_WANT_WRITE) {
          return set_events(s, EPOLLOUT);
        }
        if (e == SSL_ERROR_WANT_READ) {
          return set_events(s, EPOLLIN);
        }
        ERR_clear_error();
        return fail(s, "write failed");
      }
      s.out.erase(0, static_cast<std::size_t>(r));
    }
    char buf[4096];
    const int r = SSL_read(s.ssl, buf, sizeof buf);
    if (r <= 0) {
      const int e = SSL_get_error(s.ssl, r);
      if (e == SSL_ERROR_WANT_READ) {
        return set_events(s, EPOLLIN);
      }
      if (e == SSL_ERROR_WANT_WRITE) {
        return set_events(s, EPOLLOUT);
      }
      ERR_clear_error();
      return fail(s, "connection closed in state " + std::to_string(static_cast<int>(s.state)));
    }
    s.in.append(buf, static_cast<std::size_t>(r));
    std::size_t nl;
    while ((nl = s.in.find("\r\n")) != std::string::npos) {
      const std::string line = s.in.substr(0, nl);
      s.in.erase(0, nl + 2);
      if (s.state == State::greeting) {
        if (line.rfind("* OK", 0) != 0) {
          return fail(s, "bad greeting: " + line);
        }
        s.state = State::login;
        s.out = login_commands_[static_cast<std::size_t>(&s - sessions_.data()) %
                                login_commands_.size()];
      } else if (s.state == State::login && line.rfind("a ", 0) == 0) {
        if (line.rfind("a OK", 0) != 0) {
          return fail(s, "login: " + line);
        }
        s.state = State::ready;
      } else if (s.state == State::noop && line.rfind("b ", 0) == 0) {
        if (line.rfind("b OK", 0) != 0) {
          return fail(s, "NOOP: " + line);
        }
        s.state = State::noop_ok;
      } else if (line.rfind("* BYE", 0) == 0) {
        return fail(s, "BYE: " + line);
      }
    }
  }
}

}  // namespace iop::test
