#include "proxy/imap_stream.hpp"

#include <openssl/ssl.h>

#include "certs/tls_context.hpp"
#include "common/deadline.hpp"

namespace iop::proxy {

ImapStream::ImapStream(tcp::socket socket, net::ssl::context& context)
    : stream_(std::move(socket), context) {}

awaitable<void> ImapStream::accept_tls(boost::system::error_code& ec) {
  co_await stream_.async_handshake(net::ssl::stream_base::server,
                                   net::redirect_error(net::use_awaitable, ec));
  tls_ = !ec;
}

awaitable<void> ImapStream::connect_tls(const std::string& host, boost::system::error_code& ec) {
  // SNI for host names, and verification of `host` (DNS name or IP address) against the
  // certificate: the one implementation in certs/.
  if (!certs::set_server_identity(stream_.native_handle(), host)) {
    ec = net::error::invalid_argument;
    co_return;
  }
  stream_.set_verify_mode(net::ssl::verify_peer);
  co_await stream_.async_handshake(net::ssl::stream_base::client,
                                   net::redirect_error(net::use_awaitable, ec));
  tls_ = !ec;
}

awaitable<std::size_t> ImapStream::read_some(net::mutable_buffer buffer,
                                             boost::system::error_code& ec) {
  if (tls_) {
    co_return co_await stream_.async_read_some(buffer, net::redirect_error(net::use_awaitable, ec));
  }
  co_return co_await stream_.next_layer().async_read_some(
      buffer, net::redirect_error(net::use_awaitable, ec));
}

awaitable<void> ImapStream::write_all(net::const_buffer buffer, boost::system::error_code& ec) {
  if (tls_) {
    co_await net::async_write(stream_, buffer, net::redirect_error(net::use_awaitable, ec));
  } else {
    co_await net::async_write(stream_.next_layer(), buffer,
                              net::redirect_error(net::use_awaitable, ec));
  }
}

awaitable<void> ImapStream::shutdown(std::chrono::milliseconds limit) {
  if (tls_ && stream_.next_layer().is_open()) {
    // async_shutdown waits for the peer's close_notify, which a peer that already went away
    // never sends: bound it.
    Deadline deadline(stream_.get_executor(), limit, [socket = &stream_.next_layer()] {
      boost::system::error_code ignored;
      socket->close(ignored);
    });
    boost::system::error_code ec;
    co_await stream_.async_shutdown(net::redirect_error(net::use_awaitable, ec));
    deadline.disarm();
  }
  close();
}

void ImapStream::cancel() {
  boost::system::error_code ignored;
  stream_.next_layer().cancel(ignored);
}

void ImapStream::close() {
  boost::system::error_code ignored;
  stream_.next_layer().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.next_layer().close(ignored);
}

bool is_normal_close(const boost::system::error_code& ec) {
  return ec == net::error::eof || ec == net::ssl::error::stream_truncated ||
         ec == net::error::connection_reset || ec == net::error::operation_aborted ||
         ec == net::error::broken_pipe || ec == net::error::bad_descriptor;
}

}  // namespace iop::proxy
