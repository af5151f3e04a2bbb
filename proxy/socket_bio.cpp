#include "proxy/socket_bio.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <new>

namespace iop::proxy {
namespace {

struct State {
  tcp::socket* socket = nullptr;
  bool hold = false;  // sends say MSG_MORE
};

State& state(BIO* bio) { return *static_cast<State*>(BIO_get_data(bio)); }

// -1 once the socket is closed.
int descriptor(BIO* bio) { return state(bio).socket->native_handle(); }

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

int socket_write(BIO* bio, const char* data, std::size_t size, std::size_t* written) {
  BIO_clear_retry_flags(bio);
  const int fd = descriptor(bio);
  if (fd < 0) {
    errno = EBADF;
    *written = 0;
    return 0;
  }
  const int flags = MSG_NOSIGNAL | (state(bio).hold ? MSG_MORE : 0);
  const auto n = ::send(fd, data, size, flags);
  if (n >= 0) {
    *written = static_cast<std::size_t>(n);
    return 1;
  }
  if (would_block(errno)) {
    BIO_set_retry_write(bio);
  }
  *written = 0;
  return 0;  // errno stays for SSL_ERROR_SYSCALL
}

int socket_read(BIO* bio, char* data, std::size_t size, std::size_t* read) {
  BIO_clear_retry_flags(bio);
  *read = 0;
  const int fd = descriptor(bio);
  if (fd < 0) {
    errno = EBADF;
    return 0;
  }
  const auto n = ::recv(fd, data, size, 0);
  if (n > 0) {
    *read = static_cast<std::size_t>(n);
    return 1;
  }
  if (n == 0) {
    // What OpenSSL asks BIO_eof() about to tell a peer that closed without close_notify
    // (SSL_R_UNEXPECTED_EOF_WHILE_READING) from an I/O error.
    BIO_set_flags(bio, BIO_FLAGS_IN_EOF);
  } else if (would_block(errno)) {
    BIO_set_retry_read(bio);
  }
  return 0;
}

long socket_ctrl(BIO* bio, int command, long /*number*/, void* pointer) {
  switch (command) {
    case BIO_CTRL_FLUSH:  // nothing is buffered here
      return 1;
    case BIO_CTRL_EOF:
      return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0 ? 1 : 0;
    case BIO_C_GET_FD:
      if (pointer != nullptr) {
        *static_cast<int*>(pointer) = descriptor(bio);
      }
      return descriptor(bio);
    default:
      return 0;
  }
}

int socket_create(BIO* bio) {
  auto* const s = new (std::nothrow) State;
  if (s == nullptr) {
    return 0;
  }
  BIO_set_data(bio, s);
  BIO_set_init(bio, 1);
  return 1;
}

int socket_destroy(BIO* bio) {
  delete static_cast<State*>(BIO_get_data(bio));
  BIO_set_data(bio, nullptr);
  return 1;
}

const BIO_METHOD* socket_method() {
  // Made once, on first use (thread-safe static), and kept for the process's life.
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "iop-socket");
    if (m != nullptr) {
      BIO_meth_set_write_ex(m, socket_write);
      BIO_meth_set_read_ex(m, socket_read);
      BIO_meth_set_ctrl(m, socket_ctrl);
      BIO_meth_set_create(m, socket_create);
      BIO_meth_set_destroy(m, socket_destroy);
    }
    return m;
  }();
  return method;
}

}  // namespace

BIO* new_socket_bio(tcp::socket& socket) {
  const BIO_METHOD* method = socket_method();
  if (method == nullptr) {
    return nullptr;
  }
  BIO* bio = BIO_new(method);
  if (bio != nullptr) {
    state(bio).socket = &socket;
  }
  return bio;
}

bool hold_socket_bio_sends(BIO* bio, bool on) {
  State& s = state(bio);
  const bool was = s.hold;
  s.hold = on;
  if (on || !was) {
    return true;
  }
  // Setting TCP_NODELAY (already on) pushes the segment MSG_MORE held: tcp(7), and Linux's
  // __tcp_sock_set_nodelay() calls tcp_push_pending_frames(). One call, no data.
  const int fd = descriptor(bio);
  const int one = 1;
  return fd >= 0 && ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
}

}  // namespace iop::proxy
