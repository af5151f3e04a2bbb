#include "proxy/parked_stream.hpp"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <vector>

#include "proxy/prewarm_policy.hpp"

namespace iop::proxy {

namespace {

// Unsolicited bytes a parked connection may collect (EXISTS, EXPUNGE, FETCH flag updates while
// nobody uses it). More than this and it is dropped: a fresh login is cheaper than holding a
// backlog.
constexpr std::size_t max_parked_bytes = 64 * 1024;

// How long the TLS close of a connection that will not be used may take.
constexpr std::chrono::milliseconds close_limit{1000};

}  // namespace

ParkedStream::ParkedStream(const net::any_io_executor& executor)
    : home(executor), timer(executor), handoff(executor) {}

void retire_parked(ParkedStream& parked, std::string why) {
  if (parked.claimed || parked.closing) {
    return;
  }
  parked.closing = true;
  parked.why = std::move(why);
  parked.timer.cancel();
  if (parked.stream) {
    parked.stream->cancel();  // ends the watcher's wait (or read)
  }
}

void close_parked(const std::shared_ptr<ParkedStream>& parked, std::string why) {
  net::post(parked->home,
            [parked, why = std::move(why)]() mutable { retire_parked(*parked, std::move(why)); });
}

awaitable<bool> claim_parked(ParkedStream& p) {
  if (p.claimed || p.closing || !p.stream) {
    co_return false;
  }
  p.claimed = true;
  p.timer.cancel();
  // The watcher is suspended in wait_readable() (its only suspension point while parked).
  // Cancel that wait and let the watcher finish with the stream (wait_readable() still touches
  // it after the wait) before it changes hands: the watcher cancels `handoff` on its way out.
  // Bounded, in case the watcher is not there: then the stream is not handed out.
  p.stream->cancel();
  p.handoff.expires_after(std::chrono::seconds(5));
  boost::system::error_code ec;
  co_await p.handoff.async_wait(net::redirect_error(net::use_awaitable, ec));
  if (ec != net::error::operation_aborted || !p.stream) {
    spdlog::error("parked upstream connection: its watcher did not let go of it");
    co_return false;
  }
  co_return true;
}

awaitable<bool> watch_parked(ParkedStream& p) {
  for (;;) {
    boost::system::error_code ec;
    // Holds no buffer and can be cancelled at any time without touching the TLS state.
    co_await p.stream->wait_readable(ec);
    if (p.claimed) {
      p.handoff.cancel();  // the claim may take the stream now: this coroutine is done with it
      co_return true;
    }
    if (p.closing) {
      break;
    }
    if (ec) {
      p.server_closed = true;
      p.why = fmt::format("the server closed it ({})", ec.message());
      break;
    }
    // Everything available now, without waiting (a TLS record may be incomplete: 0, wait again).
    // The buffer exists only while reading: a parked connection holds none.
    std::vector<char> buffer(4096);
    std::size_t n = 0;
    do {
      n = p.stream->read_available(net::buffer(buffer), ec);
      p.pending.append(buffer.data(), n);
    } while (n > 0 && !ec && p.pending.size() <= max_parked_bytes);
    if (ec) {
      p.server_closed = true;
      p.why = fmt::format("the server closed it ({})", ec.message());
      break;
    }
    // A BYE means the server is closing (RFC 9051 §7.1.5: e.g. its idle autologout, or an admin
    // kick); a literal holding "* BYE" at a line start only costs a fresh connection.
    if (holds_bye(p.pending)) {
      p.server_closed = true;
      p.why = "the server sent BYE";
      break;
    }
    if (p.pending.size() > max_parked_bytes) {
      p.why = "too much unsolicited data from the server";
      break;
    }
  }
  // A claim that took the connection out of its pool just now (the server closed it at the
  // same moment) must not wait for a handoff that will never come.
  p.closing = true;
  p.timer.cancel();
  co_return false;
}

awaitable<void> close_parked_stream(ImapStream& stream, bool logout) {
  if (logout) {
    boost::system::error_code ec;
    const std::string command = "w1 LOGOUT\r\n";
    co_await stream.write_all(net::buffer(command), ec);
  }
  co_await stream.shutdown(close_limit);
}

void move_to_executor(ImapStream& stream, const net::any_io_executor& executor,
                      boost::system::error_code& ec) {
  auto& socket = stream.socket();
  if (socket.get_executor() == executor) {
    return;
  }
  // The descriptor changes reactor; the TLS state stays: the SSL object's BIO asks the socket
  // for its descriptor on every call (proxy/socket_bio.hpp), and the number does not change.
  const auto local = socket.local_endpoint(ec);
  if (ec) {
    return;
  }
  const int fd = socket.release(ec);
  if (ec) {
    return;
  }
  tcp::socket moved(executor);
  moved.assign(local.protocol(), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  socket = std::move(moved);
  socket.non_blocking(true, ec);  // as it was (ImapStream drives OpenSSL on a non-blocking fd)
}

}  // namespace iop::proxy
