#pragma once
// One side of a proxied connection: a TCP socket that is, or may become, TLS (implicit TLS,
// STARTTLS, or the upstream's TLS). Reads and writes go through TLS once it is active.
//
// TLS is OpenSSL driven directly on the non-blocking socket (issue #9): OpenSSL reads and writes
// the descriptor itself, and the coroutine waits for readiness (async_wait) when OpenSSL says
// WANT_READ / WANT_WRITE. Compared with Asio's ssl::stream this keeps no buffers of its own (that
// one holds four 17 KiB buffers per connection for its memory BIO pair, idle or not), copies
// nothing between a BIO pair and the socket, and lets one read take every record the kernel
// holds (read-ahead). With SSL_MODE_RELEASE_BUFFERS (certs/tls_context.cpp) an idle connection
// holds no record buffer at all, and wait_readable() lets the relay hold none either.

#include <openssl/ssl.h>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/asio.hpp"

namespace iop::proxy {

class ImapStream {
 public:
  ImapStream(tcp::socket socket, net::ssl::context& context);
  ImapStream(const ImapStream&) = delete;
  ImapStream& operator=(const ImapStream&) = delete;
  ~ImapStream();

  // TLS server handshake (client side of the proxy). Suspends; errors in `ec`.
  awaitable<void> accept_tls(boost::system::error_code& ec);
  // TLS client handshake to `host` with SNI and host-name verification against the context's
  // trust store.
  awaitable<void> connect_tls(const std::string& host, boost::system::error_code& ec);

  // Waits until read_available() has something to return (bytes TLS already decrypted or
  // buffered, or a readable socket: data, EOF or an error), holding no buffer meanwhile.
  awaitable<void> wait_readable(boost::system::error_code& ec);
  // Reads what can be read now without waiting, up to the buffer's size: with TLS, record after
  // record until the socket has no more. 0 without error: nothing yet (wait_readable() again;
  // a TLS record may be incomplete). EOF and errors come in `ec` only when no byte was read.
  std::size_t read_available(net::mutable_buffer buffer, boost::system::error_code& ec);
  // At least one byte (waits for it), as much as is available.
  awaitable<std::size_t> read_some(net::mutable_buffer buffer, boost::system::error_code& ec);
  // Writes all of `buffer` (one write call from the caller's view: Dovecot needs each IMAP line
  // with its CRLF in a single write). On the server side of TLS 1.3, the first write after the
  // handshake is followed by the client's session ticket (see ticket_due_).
  awaitable<void> write_all(net::const_buffer buffer, boost::system::error_code& ec);

  // Sends TLS close_notify (when TLS is active), waits within `limit` for the peer to close its
  // side too (so no unread byte makes our close a reset that could cost the peer data it has not
  // read yet), then closes the socket.
  awaitable<void> shutdown(std::chrono::milliseconds limit);
  // Cancels pending operations (they complete with operation_aborted).
  void cancel();
  // Closes the socket at once.
  void close();

  [[nodiscard]] bool tls() const { return ssl_ != nullptr && tls_; }
  [[nodiscard]] tcp::socket& socket() { return socket_; }
  // The TLS connection (verify result, version, peer certificate); null before the handshake.
  [[nodiscard]] SSL* native_handle() { return ssl_.get(); }

  // Blocking forms, for the client library's released stream (poll(2) on the descriptor; never
  // on an io_context thread). Wait until at least one byte moved; `ec` as above.
  std::size_t read_some_blocking(net::mutable_buffer buffer, boost::system::error_code& ec);
  std::size_t write_some_blocking(net::const_buffer buffer, boost::system::error_code& ec);

 private:
  // Runs `op` (an SSL_* call returning > 0 on success) until it succeeds, waiting for the
  // socket as OpenSSL asks; the error otherwise.
  template <class Op>
  awaitable<int> drive(Op op, boost::system::error_code& ec);
  boost::system::error_code error_from(int ret);
  awaitable<void> handshake(bool server, boost::system::error_code& ec);

  tcp::socket socket_;
  net::ssl::context& context_;
  std::unique_ptr<SSL, void (*)(SSL*)> ssl_;
  bool tls_ = false;
  // A fatal TLS error happened: OpenSSL forbids SSL_shutdown afterwards.
  bool failed_ = false;
  // The last read_available() found nothing more (OpenSSL or the socket would block): only
  // then does wait_readable() wait on the socket.
  bool drained_ = false;
  // ... and OpenSSL must write before it can read on.
  bool read_wants_write_ = false;
  // Server side, TLS 1.3: the session ticket (RFC 8446 §4.6.1) goes out after the first write
  // (the greeting) instead of before it, as OpenSSL would send it at the end of the handshake
  // (certs/tls_context.cpp sets no automatic tickets): the client then reads its greeting
  // without first taking in a ticket, and takes the ticket in while it waits for its next
  // answer.
  bool ticket_due_ = false;
  // An EOF or error met after some bytes: returned by the next read.
  boost::system::error_code pending_error_;
};

// Whether `ec` is how a peer ends a connection (EOF, TLS close, reset, our own cancel).
bool is_normal_close(const boost::system::error_code& ec);

}  // namespace iop::proxy
