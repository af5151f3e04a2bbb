#pragma once
// One side of a proxied connection: a TCP socket that is, or may become, TLS (implicit TLS,
// STARTTLS, or the upstream's TLS). Reads and writes go through TLS once it is active.

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <string>

#include "common/asio.hpp"

namespace iop::proxy {

using TlsStream = net::ssl::stream<tcp::socket>;

class ImapStream {
 public:
  ImapStream(tcp::socket socket, net::ssl::context& context);

  // TLS server handshake (client side of the proxy). Suspends; errors in `ec`.
  awaitable<void> accept_tls(boost::system::error_code& ec);
  // TLS client handshake to `host` with SNI and host-name verification against the context's
  // trust store.
  awaitable<void> connect_tls(const std::string& host, boost::system::error_code& ec);

  awaitable<std::size_t> read_some(net::mutable_buffer buffer, boost::system::error_code& ec);
  // Writes all of `buffer` (one write call from the caller's view: Dovecot needs each IMAP line
  // with its CRLF in a single write).
  awaitable<void> write_all(net::const_buffer buffer, boost::system::error_code& ec);

  // Sends TLS close_notify (when TLS is active) within `limit`, then closes the socket.
  awaitable<void> shutdown(std::chrono::milliseconds limit);
  // Cancels pending operations (they complete with operation_aborted).
  void cancel();
  // Closes the socket at once.
  void close();

  [[nodiscard]] bool tls() const { return tls_; }
  [[nodiscard]] tcp::socket& socket() { return stream_.next_layer(); }
  [[nodiscard]] TlsStream& tls_stream() { return stream_; }

 private:
  TlsStream stream_;
  bool tls_ = false;
};

// Whether `ec` is how a peer ends a connection (EOF, TLS close, reset, our own cancel).
bool is_normal_close(const boost::system::error_code& ec);

}  // namespace iop::proxy
