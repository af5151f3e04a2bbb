// The public TlsStream (include/imap_oauth2_proxy/client.hpp): the released connection's
// ImapStream behind Asio's stream interface. Shared with each pending operation, so destroying
// the TlsStream closes the socket and pending operations end with an error, never touching
// freed memory.

#include "client/tls_stream_impl.hpp"

namespace imap_oauth2_proxy {
namespace {

using iop::proxy::ImapStream;

iop::awaitable<void> read_op(std::shared_ptr<ImapStream> stream, net::mutable_buffer buffer,
                             TlsStream::Handler done) {
  boost::system::error_code ec;
  const auto n = co_await stream->read_some(buffer, ec);
  done(ec, n);
}

iop::awaitable<void> write_op(std::shared_ptr<ImapStream> stream, net::const_buffer buffer,
                              TlsStream::Handler done) {
  boost::system::error_code ec;
  co_await stream->write_all(buffer, ec);
  done(ec, ec ? 0 : buffer.size());
}

}  // namespace

TlsStream::TlsStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsStream::TlsStream(TlsStream&&) noexcept = default;
TlsStream& TlsStream::operator=(TlsStream&&) noexcept = default;

TlsStream::~TlsStream() {
  if (impl_ && impl_->stream) {
    impl_->stream->close();
  }
}

TlsStream::executor_type TlsStream::get_executor() {
  return impl_->stream->socket().get_executor();
}

SSL* TlsStream::native_handle() { return impl_->stream->native_handle(); }

boost::asio::ip::tcp::socket& TlsStream::lowest_layer() { return impl_->stream->socket(); }

std::size_t TlsStream::read_one(boost::asio::mutable_buffer buffer, boost::system::error_code& ec) {
  return impl_->stream->read_some_blocking(buffer, ec);
}

std::size_t TlsStream::write_one(boost::asio::const_buffer buffer, boost::system::error_code& ec) {
  return impl_->stream->write_some_blocking(buffer, ec);
}

void TlsStream::start_read(boost::asio::mutable_buffer buffer, Handler done) {
  net::co_spawn(get_executor(), read_op(impl_->stream, buffer, std::move(done)), net::detached);
}

void TlsStream::start_write(boost::asio::const_buffer buffer, Handler done) {
  net::co_spawn(get_executor(), write_op(impl_->stream, buffer, std::move(done)), net::detached);
}

}  // namespace imap_oauth2_proxy
