#include "proxy/relay.hpp"

#include <sys/socket.h>

#include <fmt/format.h>

#include <memory>
#include <optional>
#include <vector>

#include "common/deadline.hpp"
#include "proxy/upstream_bye.hpp"

namespace iop::proxy {
namespace {

using Clock = std::chrono::steady_clock;

// One read takes up to this much: many TLS records (16 KiB of plaintext at most each) in one
// go, written on in one SSL_write.
constexpr std::size_t relay_buffer_bytes = 128 * 1024;
// Free buffers kept per thread for the next burst; beyond that they go back to malloc.
constexpr std::size_t pooled_buffers_per_thread = 32;
// A busy direction gives the worker's other sessions a turn after this many bytes.
constexpr std::size_t yield_after_bytes = 256 * 1024;
// How much of the downstream's end is searched for a last `* BYE` line (a BYE with a longer
// text than this is not recognised as the close reason; servers send a few dozen bytes).
constexpr std::size_t bye_window = 2048;
constexpr std::chrono::seconds shutdown_limit{2};

// Bulk reads: while a direction moves bulk data, the pump asks the kernel to wake it only once
// this much has arrived (SO_RCVLOWAT, socket(7)), so one wake-up reads and re-frames many
// records instead of one or two (Dovecot writes 4 KiB records). A direction is bulk while its
// last wake-up read at least bulk_read_bytes; interactive traffic never raises the mark.
constexpr int bulk_low_water = 64 * 1024;
constexpr std::size_t bulk_read_bytes = 16 * 1024;
// How long a bulk wait may wait for the mark: then the mark goes back to 1 byte, which wakes
// the pump for whatever has arrived (Linux re-checks readability when SO_RCVLOWAT changes,
// tcp_set_rcvlowat()), so the tail of a transfer is late by at most this. EOF and errors wake
// the pump whatever the mark (tcp_poll()).
constexpr std::chrono::microseconds bulk_wait_limit{1000};

// Shared by the two pumps and the watchdog; all on one strand, so no locking.
struct RelayState {
  RelayState(ImapStream& c, ImapStream& u, std::chrono::milliseconds idle, net::any_io_executor ex)
      : client(c), upstream(u), idle_timeout(idle), timer(ex) {}

  ImapStream& client;
  ImapStream& upstream;
  std::chrono::milliseconds idle_timeout;
  net::steady_timer timer;
  Clock::time_point last_activity = Clock::now();
  int running = 2;
  bool stopping = false;
  RelayResult result;
  std::string bye_tail;   // the end of the last downstream chunk, for a BYE split across reads
  std::string bye;        // the upstream's last BYE: the close reason that explains the most
  RelayObserver observe;  // may be empty

  // Ends both pumps: pending reads and writes complete with operation_aborted.
  void stop(std::string reason) {
    if (!stopping) {
      stopping = true;
      result.close_reason = std::move(reason);
    }
    client.cancel();
    upstream.cancel();
    timer.cancel();
  }
};

std::string describe_end(const boost::system::error_code& ec, bool from_client) {
  const char* who = from_client ? "client" : "upstream";
  if (ec == net::error::eof || ec == net::ssl::error::stream_truncated) {
    return fmt::format("{} closed", who);
  }
  return fmt::format("{} connection failed: {}", who, ec.message());
}

// Relay buffers, by thread: taken when a read has data, given back as soon as the side goes
// quiet, so an idle session holds none (issue #9).
class BufferPool {
 public:
  using Buffer = std::unique_ptr<char[]>;

  static Buffer take() {
    auto& free = pool().free_;
    if (free.empty()) {
      return Buffer(new char[relay_buffer_bytes]);
    }
    Buffer b = std::move(free.back());
    free.pop_back();
    return b;
  }

  static void give(Buffer b) {
    auto& free = pool().free_;
    if (free.size() < pooled_buffers_per_thread) {
      free.push_back(std::move(b));
    }
  }

 private:
  static BufferPool& pool() {
    thread_local BufferPool instance;
    return instance;
  }
  std::vector<Buffer> free_;
};

// Remembers an upstream BYE's text as the close reason ("Session invalidated -
// AccessTokenExpired" is how Exchange ends sessions whose token expired). A BYE counts only as
// the last thing the server said before closing: a "* BYE" line inside a message body is
// followed by more data, and is forgotten again.
void track_bye(RelayState& state, std::string_view chunk) {
  // Only the end of the data can hold the last lines: look at no more than bye_window bytes
  // of a chunk (a copy of every relayed byte would cost throughput).
  if (chunk.size() > bye_window) {
    state.bye_tail.clear();
    chunk = chunk.substr(chunk.size() - bye_window);
  }
  state.bye_tail.append(chunk);
  const auto bye = last_bye(state.bye_tail);
  state.bye = bye ? "upstream BYE: " + *bye : std::string();
  if (state.bye_tail.size() > bye_window) {
    state.bye_tail.erase(0, state.bye_tail.size() - bye_window);
  }
}

// The source socket's receive low-water mark (SO_RCVLOWAT), set only when it changes.
class LowWater {
 public:
  explicit LowWater(ImapStream& source) : source_(source) {}

  void set(int bytes) {
    auto& socket = source_.socket();
    if (bytes == current_ || !socket.is_open()) {
      return;
    }
    // Best effort: where the option fails, the pump just wakes more often.
    if (::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) == 0) {
      current_ = bytes;
    }
  }

 private:
  ImapStream& source_;
  int current_ = 1;
};

// One direction. Waits for the source without a buffer; when it has data, takes a pooled
// buffer, reads everything available (many TLS records) and writes it on in one write, again
// until the source has nothing more, then gives the buffer back.
awaitable<void> pump(std::shared_ptr<RelayState> state, bool upward) {
  ImapStream& from = upward ? state->client : state->upstream;
  ImapStream& to = upward ? state->upstream : state->client;
  auto& counter = upward ? state->result.client_to_upstream : state->result.upstream_to_client;
  const auto executor = co_await net::this_coro::executor;
  std::size_t since_yield = 0;
  LowWater low_water(from);
  bool bulk = false;
  boost::system::error_code ec;
  while (!state->stopping) {
    low_water.set(bulk ? bulk_low_water : 1);
    std::optional<Deadline> lower;  // a bulk wait's limit: the mark back to 1 byte
    if (bulk) {
      lower.emplace(executor, bulk_wait_limit, [&low_water] { low_water.set(1); });
    }
    co_await from.wait_readable(ec);
    lower.reset();
    if (ec || state->stopping) {
      if (!state->stopping) {
        state->stop(describe_end(ec, upward));
      }
      break;
    }
    BufferPool::Buffer buffer = BufferPool::take();
    std::size_t this_wake = 0;
    for (;;) {
      const auto n = from.read_available(net::buffer(buffer.get(), relay_buffer_bytes), ec);
      this_wake += n;
      if (ec) {
        if (!state->stopping) {
          state->stop(describe_end(ec, upward));
        }
        break;
      }
      if (n == 0) {
        break;  // quiet again (or half a record): back to waiting, without the buffer
      }
      state->last_activity = Clock::now();
      const std::string_view chunk(buffer.get(), n);
      // Before the write: whoever reacts to these bytes finds the observer already past them.
      if (state->observe) {
        state->observe(upward, chunk);
      }
      if (!upward) {
        track_bye(*state, chunk);
      }
      co_await to.write_all(net::buffer(chunk.data(), chunk.size()), ec);
      if (ec) {
        if (!state->stopping) {
          state->stop(describe_end(ec, !upward));
        }
        break;
      }
      counter += n;
      state->last_activity = Clock::now();
      if (state->stopping) {
        break;
      }
      // Reads and writes that never block never suspend: a transfer that keeps both sockets
      // ready would hold the worker, and every other session on it, until it ends. Let the
      // others run after each yield_after_bytes.
      since_yield += n;
      if (since_yield >= yield_after_bytes) {
        since_yield = 0;
        co_await net::post(executor, net::use_awaitable);
      }
    }
    BufferPool::give(std::move(buffer));
    bulk = this_wake >= bulk_read_bytes;
  }
  // The TLS close that follows waits for the peer's close_notify, a record far below a bulk mark.
  low_water.set(1);
}

}  // namespace

awaitable<RelayResult> relay(ImapStream& client, ImapStream& upstream,
                             std::chrono::milliseconds idle_timeout, RelayObserver observe) {
  const auto executor = co_await net::this_coro::executor;
  auto state = std::make_shared<RelayState>(client, upstream, idle_timeout, executor);
  state->observe = std::move(observe);
  for (const bool upward : {true, false}) {
    net::co_spawn(executor, pump(state, upward), [state](std::exception_ptr e) {
      if (e && !state->stopping) {
        state->stop("internal error in the relay");
      }
      --state->running;
      state->timer.cancel();
    });
  }
  // The watchdog doubles as the join: it returns only when both pumps have ended, so nothing
  // outlives the session's streams.
  while (state->running > 0) {
    state->timer.expires_at(state->stopping ? Clock::time_point::max()
                                            : state->last_activity + state->idle_timeout);
    boost::system::error_code ec;
    co_await state->timer.async_wait(net::redirect_error(net::use_awaitable, ec));
    if (!state->stopping && Clock::now() >= state->last_activity + state->idle_timeout) {
      state->result.idle_timeout = true;
      state->stop("idle timeout");
    }
  }
  // Say goodbye properly on both sides (TLS close_notify), bounded.
  co_await client.shutdown(shutdown_limit);
  co_await upstream.shutdown(shutdown_limit);
  // After a BYE either side may notice the end first (the client hangs up after LOGOUT's
  // answer); the BYE explains it either way. Timeouts and errors keep their own reason.
  if (!state->bye.empty() && (state->result.close_reason == "upstream closed" ||
                              state->result.close_reason == "client closed")) {
    state->result.close_reason = state->bye;
  }
  co_return state->result;
}

}  // namespace iop::proxy
