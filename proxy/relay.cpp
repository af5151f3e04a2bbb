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
// After the client hangs up, the server's last replies (LOGOUT's BYE and OK, QUIT's 221, the
// 250 for a message whose end came with the hang-up) still go down: the session ends when the
// upstream closes (it does after LOGOUT and QUIT), when it has said nothing for drain_quiet, or
// at drain_limit. The upstream is not told of the hang-up first: Dovecot drops a LOGOUT that
// arrives together with the end of the stream, unanswered.
constexpr std::chrono::seconds drain_quiet{1};
constexpr std::chrono::seconds drain_limit{5};

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
  // The client closed its side: the relay only carries the upstream's last replies down, until
  // it closes, goes quiet (last_activity + drain_quiet) or drain_until.
  bool client_gone = false;
  Clock::time_point drain_until = Clock::time_point::max();
  RelayResult result;
  std::string bye_tail;   // the end of the last downstream chunk, for a BYE split across reads
  std::string bye;        // the upstream's last BYE: the close reason that explains the most
  RelayObserver observe;  // may be empty

  // Ends both pumps: pending reads and writes complete with operation_aborted. After the
  // client's hang-up, that stays the reason (whatever ends the drain).
  void stop(std::string reason) {
    if (!stopping) {
      stopping = true;
      if (!client_gone) {
        result.close_reason = std::move(reason);
      }
    }
    client.cancel();
    upstream.cancel();
    timer.cancel();
  }

  // The client's clean end (RFC 9051 §3.4, RFC 5321 §4.1.1.10: a client may send LOGOUT or
  // QUIT and close at once): what the server still answers goes down before the session ends.
  void client_closed() {
    client_gone = true;
    result.close_reason = "client closed";
    last_activity = Clock::now();
    drain_until = last_activity + drain_limit;
    timer.cancel();  // the watchdog re-arms with the drain deadlines
  }

  // When the watchdog ends the relay if nothing else does first.
  [[nodiscard]] Clock::time_point deadline() const {
    if (stopping) {
      return Clock::time_point::max();
    }
    return client_gone ? std::min(drain_until, last_activity + drain_quiet)
                       : last_activity + idle_timeout;
  }
};

// A peer's orderly end (EOF, or TLS without close_notify), not a failure.
bool clean_end(const boost::system::error_code& ec) {
  return ec == net::error::eof || ec == net::ssl::error::stream_truncated;
}

std::string describe_end(const boost::system::error_code& ec, bool from_client) {
  const char* who = from_client ? "client" : "upstream";
  if (clean_end(ec)) {
    return fmt::format("{} closed", who);
  }
  return fmt::format("{} connection failed: {}", who, ec.message());
}

// What a pump does when its source ends: the client's clean end lets the upstream's last
// replies come down; anything else ends the relay.
void source_ended(RelayState& state, const boost::system::error_code& ec, bool upward) {
  if (state.stopping) {
    return;
  }
  if (upward && clean_end(ec)) {
    state.client_closed();
  } else {
    state.stop(describe_end(ec, upward));
  }
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
  while (!state->stopping && !(upward && state->client_gone)) {
    low_water.set(bulk ? bulk_low_water : 1);
    std::optional<Deadline> lower;  // a bulk wait's limit: the mark back to 1 byte
    if (bulk) {
      lower.emplace(executor, bulk_wait_limit, [&low_water] { low_water.set(1); });
    }
    co_await from.wait_readable(ec);
    lower.reset();
    if (ec || state->stopping) {
      source_ended(*state, ec, upward);
      break;
    }
    BufferPool::Buffer buffer = BufferPool::take();
    std::size_t this_wake = 0;
    for (;;) {
      const auto n = from.read_available(net::buffer(buffer.get(), relay_buffer_bytes), ec);
      this_wake += n;
      if (ec) {
        source_ended(*state, ec, upward);
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
    state->timer.expires_at(state->deadline());
    boost::system::error_code ec;
    co_await state->timer.async_wait(net::redirect_error(net::use_awaitable, ec));
    if (!state->stopping && Clock::now() >= state->deadline()) {
      if (state->client_gone) {
        state->stop("client closed");  // the upstream said its last within the drain
      } else {
        state->result.idle_timeout = true;
        state->stop("idle timeout");
      }
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
