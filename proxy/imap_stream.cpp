#include "proxy/imap_stream.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <poll.h>

#include <array>
#include <cerrno>

#include "certs/tls_context.hpp"
#include "common/deadline.hpp"
#include "proxy/socket_bio.hpp"

namespace iop::proxy {
namespace {

constexpr std::size_t read_buffer_bytes = 64 * 1024;
constexpr std::size_t max_record_plaintext = 16 * 1024;

void free_ssl(SSL* ssl) { SSL_free(ssl); }

// SSL_free_buffers() frees a read buffer that still backs a parsed record header in OpenSSL
// before 3.0.14, 3.1.6, 3.2.2 and 3.3.1 (CVE-2024-4741, a use-after-free a client can trigger):
// on those, idle connections keep their buffer instead. Checked against the library loaded at
// run time, which for the client library is the application's.
bool free_buffers_is_safe() {
  static const bool safe = [] {
    const unsigned long v = OpenSSL_version_num();  // 0xMNN00PP0
    const unsigned long minor = (v >> 20) & 0xff;
    const unsigned long patch = (v >> 4) & 0xff;
    if ((v >> 28) != 3) {
      return (v >> 28) > 3;
    }
    switch (minor) {
      case 0:
        return patch >= 14;
      case 1:
        return patch >= 6;
      case 2:
        return patch >= 2;
      case 3:
        return patch >= 1;
      default:
        return true;
    }
  }();
  return safe;
}

using error_code = boost::system::error_code;

bool would_block(const error_code& ec) {
  return ec == net::error::would_block || ec == net::error::try_again;
}

// Creates the TLS connection on the socket: read-ahead (one recv takes every record the kernel
// has, not a 5-byte header and then the body), released buffers while idle.
std::unique_ptr<SSL, void (*)(SSL*)> new_tls(net::ssl::context& context, tcp::socket& socket) {
  std::unique_ptr<SSL, void (*)(SSL*)> ssl(SSL_new(context.native_handle()), free_ssl);
  if (!ssl) {
    return ssl;
  }
  BIO* bio = new_socket_bio(socket);
  if (bio == nullptr) {
    return {nullptr, free_ssl};
  }
  SSL_set_bio(ssl.get(), bio, bio);
  SSL_set_mode(ssl.get(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_set_read_ahead(ssl.get(), 1);
  // Room for several records per recv (servers that send small records: Dovecot's 4 KiB); only
  // allocated while data flows (SSL_MODE_RELEASE_BUFFERS).
  SSL_set_default_read_buffer_len(ssl.get(), read_buffer_bytes);
  return ssl;
}

}  // namespace

ImapStream::ImapStream(tcp::socket socket, net::ssl::context& context)
    : socket_(std::move(socket)), context_(context), ssl_(nullptr, free_ssl) {}

ImapStream::~ImapStream() = default;

error_code ImapStream::error_from(int ret) {
  const int saved_errno = errno;
  const int err = SSL_get_error(ssl_.get(), ret);
  if (err == SSL_ERROR_ZERO_RETURN) {
    return net::error::eof;  // the peer's close_notify
  }
  failed_ = true;
  const unsigned long queued = ERR_get_error();
  ERR_clear_error();
  if (err == SSL_ERROR_SYSCALL && queued == 0) {
    // An I/O error, or (OpenSSL before 3) an EOF without close_notify.
    return saved_errno != 0 ? error_code(saved_errno, boost::system::system_category())
                            : error_code(net::ssl::error::stream_truncated);
  }
  if (ERR_GET_REASON(queued) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    return net::ssl::error::stream_truncated;  // closed without close_notify (OpenSSL 3)
  }
  if (queued == 0) {
    // A state this code never asks for (an X509 lookup, async jobs, a ClientHello callback):
    // an error all the same, never the empty code that reads as success.
    return boost::system::errc::make_error_code(boost::system::errc::protocol_error);
  }
  // The same category as Asio's ssl::stream, so messages read the same
  // ("certificate verify failed (SSL routines)").
  return {static_cast<int>(queued), net::error::get_ssl_category()};
}

template <class Op>
awaitable<int> ImapStream::drive(Op op, error_code& ec) {
  for (;;) {
    if (!socket_.is_open()) {
      ec = net::error::bad_descriptor;  // closed by a deadline or a shutdown while we waited
      co_return 0;
    }
    ERR_clear_error();
    const int ret = op();
    if (ret > 0) {
      ec = {};
      co_return ret;
    }
    const int err = SSL_get_error(ssl_.get(), ret);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
      ec = error_from(ret);
      co_return ret;
    }
    const auto wait = err == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write;
    co_await socket_.async_wait(wait, net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      co_return ret;
    }
  }
}

awaitable<void> ImapStream::handshake(bool server, error_code& ec) {
  socket_.non_blocking(true, ec);
  if (ec) {
    co_return;
  }
  if (server) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_connect_state(ssl_.get());
  }
  SSL* const ssl = ssl_.get();
  auto step = [ssl] { return SSL_do_handshake(ssl); };
  co_await drive(step, ec);
  tls_ = !ec;
  // With read-ahead the peer's first bytes may have arrived with its last handshake message:
  // look in OpenSSL before waiting on the socket.
  drained_ = false;
}

awaitable<void> ImapStream::accept_tls(error_code& ec) {
  ssl_ = new_tls(context_, socket_);
  if (!ssl_) {
    ec = net::error::no_memory;
    co_return;
  }
  co_await handshake(true, ec);
  ticket_due_ = !ec && SSL_version(ssl_.get()) == TLS1_3_VERSION &&
                (SSL_get_options(ssl_.get()) & SSL_OP_NO_TICKET) == 0;
}

awaitable<void> ImapStream::connect_tls(const std::string& host, error_code& ec) {
  ssl_ = new_tls(context_, socket_);
  if (!ssl_) {
    ec = net::error::no_memory;
    co_return;
  }
  // SNI for host names, and verification of `host` (DNS name or IP address) against the
  // certificate: the one implementation in certs/.
  if (!certs::set_server_identity(ssl_.get(), host)) {
    ec = net::error::invalid_argument;
    co_return;
  }
  SSL_set_verify(ssl_.get(), SSL_VERIFY_PEER,
                 SSL_CTX_get_verify_callback(context_.native_handle()));
  co_await handshake(false, ec);
}

awaitable<void> ImapStream::wait_readable(error_code& ec) {
  ec = {};
  if (!drained_) {
    co_return;  // the last read stopped at a full buffer or never ran: try before waiting
  }
  co_await socket_.async_wait(read_wants_write_ ? tcp::socket::wait_write : tcp::socket::wait_read,
                              net::redirect_error(net::use_awaitable, ec));
  drained_ = false;
}

std::size_t ImapStream::read_available(net::mutable_buffer buffer, error_code& ec) {
  ec = {};
  if (buffer.size() == 0) {
    return 0;
  }
  if (!tls()) {
    if (!socket_.non_blocking()) {
      socket_.non_blocking(true, ec);
      if (ec) {
        return 0;
      }
    }
    const auto n = socket_.read_some(buffer, ec);
    drained_ = would_block(ec);
    if (drained_) {
      ec = {};
    }
    return n;
  }
  if (pending_error_) {
    ec = std::exchange(pending_error_, {});
    return 0;
  }
  if (!socket_.is_open()) {
    ec = net::error::bad_descriptor;
    return 0;
  }
  auto* const data = static_cast<char*>(buffer.data());
  std::size_t total = 0;
  read_wants_write_ = false;
  while (total < buffer.size()) {
    std::size_t n = 0;
    // SSL_get_error needs an empty queue before each call. Emptying a queue that is empty (the
    // rule after a successful read) walks all its slots, which profiling found in 1.4 % of the
    // relay's CPU at a record per call: look first.
    if (ERR_peek_error() != 0) {
      ERR_clear_error();
    }
    const int ret = SSL_read_ex(ssl_.get(), data + total, buffer.size() - total, &n);
    if (ret > 0) {
      total += n;
      continue;
    }
    const int err = SSL_get_error(ssl_.get(), ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      // WANT_WRITE: OpenSSL must send something first (a KeyUpdate answer, RFC 8446 §4.6.3).
      read_wants_write_ = err == SSL_ERROR_WANT_WRITE;
      drained_ = true;
      // The read that found the socket empty set up a fresh record buffer first, and
      // SSL_MODE_RELEASE_BUFFERS only frees one after a record is consumed: give it back now
      // (a no-op while it holds part of a record), or every idle connection keeps 64 KiB.
      if (free_buffers_is_safe()) {
        SSL_free_buffers(ssl_.get());
      }
      return total;
    }
    // EOF or an error: after the bytes read so far, if any.
    const error_code failure = error_from(ret);
    if (total == 0) {
      ec = failure;
    } else {
      pending_error_ = failure;
    }
    drained_ = false;
    return total;
  }
  drained_ = false;  // the buffer filled up: more may be waiting inside OpenSSL
  return total;
}

awaitable<std::size_t> ImapStream::read_some(net::mutable_buffer buffer, error_code& ec) {
  for (;;) {
    const auto n = read_available(buffer, ec);
    if (n > 0 || ec || buffer.size() == 0) {
      co_return n;
    }
    co_await wait_readable(ec);
    if (ec) {
      co_return 0;
    }
  }
}

awaitable<void> ImapStream::write_all(net::const_buffer buffer, error_code& ec) {
  ec = {};
  if (!tls()) {
    co_await net::async_write(socket_, buffer, net::redirect_error(net::use_awaitable, ec));
    co_return;
  }
  if (buffer.size() == 0) {
    co_return;
  }
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write_ex returns only once every record of the
  // buffer is written (retried after WANT_WRITE with the same arguments, as OpenSSL requires).
  SSL* const ssl = ssl_.get();
  std::size_t written = 0;
  auto write = [ssl, buffer, &written] {
    return SSL_write_ex(ssl, buffer.data(), buffer.size(), &written);
  };
  // More than one record (RFC 8446 §5.1: 2^14 bytes of plaintext at most): the records go out
  // in full-sized TCP segments, pushed once the last is written (proxy/socket_bio.hpp). One
  // record is pushed at once, as before: a command or a short answer waits for nothing.
  const bool hold = buffer.size() > max_record_plaintext;
  if (hold) {
    hold_socket_bio_sends(SSL_get_wbio(ssl), true);
  }
  co_await drive(write, ec);
  if (hold && !hold_socket_bio_sends(SSL_get_wbio(ssl), false) && !ec) {
    ec = error_code(errno, net::error::get_system_category());
  }
  if (ticket_due_ && !ec) {
    ticket_due_ = false;
    // Asks for one ticket; SSL_do_handshake writes it now (nothing else of the handshake is
    // left).
    if (SSL_new_session_ticket(ssl) == 1) {
      auto send_ticket = [ssl] { return SSL_do_handshake(ssl); };
      co_await drive(send_ticket, ec);
    }
  }
}

awaitable<void> ImapStream::shutdown(std::chrono::milliseconds limit) {
  if (tls() && socket_.is_open() && !failed_) {
    // The peer may never answer (it went away): bound the whole goodbye.
    Deadline deadline(socket_.get_executor(), limit, [socket = &socket_] {
      error_code ignored;
      socket->close(ignored);
    });
    SSL* const ssl = ssl_.get();
    // 0: our close_notify is sent, the peer's not yet seen; 1: both. Either ends the step.
    auto notify = [ssl] {
      const int r = SSL_shutdown(ssl);
      return r == 0 ? 1 : r;
    };
    error_code ec;
    co_await drive(notify, ec);
    if (!ec && (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN) == 0) {
      error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_send, ignored);
      // Read (and drop) until the peer's close_notify or EOF; a peer still sending data gets
      // at most 64 KiB read, so this loop always ends (the deadline needs us to yield).
      std::array<char, 512> scratch{};
      std::size_t dropped = 0;
      while (!ec && dropped < 64 * 1024) {
        co_await wait_readable(ec);
        if (!ec) {
          dropped += read_available(net::buffer(scratch), ec);
        }
      }
    }
    deadline.disarm();
  }
  close();
}

void ImapStream::cancel() {
  error_code ignored;
  socket_.cancel(ignored);
}

void ImapStream::close() {
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

namespace {

// Waits until `fd` is ready for `events` (POLLIN or POLLOUT).
boost::system::error_code poll_for(int fd, short events) {
  if (fd < 0) {
    return net::error::bad_descriptor;  // poll(2) would skip it and wait for ever
  }
  pollfd p{fd, events, 0};
  for (;;) {
    if (::poll(&p, 1, -1) >= 0) {
      return {};
    }
    if (errno != EINTR) {
      return {errno, boost::system::system_category()};
    }
  }
}

}  // namespace

std::size_t ImapStream::read_some_blocking(net::mutable_buffer buffer, error_code& ec) {
  for (;;) {
    const auto n = read_available(buffer, ec);
    if (n > 0 || ec || buffer.size() == 0) {
      return n;
    }
    ec = poll_for(socket_.native_handle(), read_wants_write_ ? POLLOUT : POLLIN);
    if (ec) {
      return 0;
    }
  }
}

std::size_t ImapStream::write_some_blocking(net::const_buffer buffer, error_code& ec) {
  ec = {};
  if (buffer.size() == 0) {
    return 0;
  }
  for (;;) {
    std::size_t written = 0;
    if (!tls()) {
      written = socket_.write_some(buffer, ec);
      if (!would_block(ec)) {
        return written;
      }
      ec = poll_for(socket_.native_handle(), POLLOUT);
    } else {
      ERR_clear_error();
      const int ret = SSL_write_ex(ssl_.get(), buffer.data(), buffer.size(), &written);
      if (ret > 0) {
        return written;
      }
      const int err = SSL_get_error(ssl_.get(), ret);
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
        ec = error_from(ret);
        return 0;
      }
      ec = poll_for(socket_.native_handle(), err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT);
    }
    if (ec) {
      return 0;
    }
  }
}

bool is_normal_close(const error_code& ec) {
  return ec == net::error::eof || ec == net::ssl::error::stream_truncated ||
         ec == net::error::connection_reset || ec == net::error::operation_aborted ||
         ec == net::error::broken_pipe || ec == net::error::bad_descriptor;
}

}  // namespace iop::proxy
