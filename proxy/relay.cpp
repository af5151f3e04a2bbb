#include "proxy/relay.hpp"

#include <fmt/format.h>

#include <memory>
#include <vector>

#include "common/sanitize.hpp"

namespace iop::proxy {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t min_buffer = 4 * 1024;
constexpr std::size_t max_buffer = 64 * 1024;
constexpr std::chrono::seconds shutdown_limit{2};

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

awaitable<void> pump(std::shared_ptr<RelayState> state, bool upward) {
  ImapStream& from = upward ? state->client : state->upstream;
  ImapStream& to = upward ? state->upstream : state->client;
  auto& counter = upward ? state->result.client_to_upstream : state->result.upstream_to_client;
  // Small while idle (thousands of IDLE sessions), larger while data streams.
  std::vector<char> buffer(min_buffer);
  boost::system::error_code ec;
  while (!state->stopping) {
    const auto n = co_await from.read_some(net::buffer(buffer), ec);
    if (ec || state->stopping) {
      if (!state->stopping) {
        state->stop(describe_end(ec, upward));
      }
      break;
    }
    state->last_activity = Clock::now();
    // Before the write: whoever reacts to these bytes finds the observer already past them.
    if (state->observe) {
      state->observe(upward, std::string_view(buffer.data(), n));
    }
    if (!upward) {
      // Keep an upstream BYE's text as the close reason ("Session invalidated -
      // AccessTokenExpired" is how Exchange ends sessions whose token expired).
      state->bye_tail.append(buffer.data(), n);
      // A BYE counts only as the last thing the server said before closing (at most the
      // tagged completion of a LOGOUT may follow it): a "* BYE" line inside a message body is
      // followed by more data, and is forgotten again.
      const std::string_view tail = state->bye_tail;
      const auto at = tail.rfind("* BYE");
      const auto line_end = at == std::string_view::npos ? at : tail.find("\r\n", at);
      std::optional<std::string> bye;
      if (line_end != std::string_view::npos) {
        const auto after = tail.substr(line_end + 2);
        const bool last = after.empty() || (after.front() != '*' && after.size() >= 2 &&
                                            after.find("\r\n") == after.size() - 2);
        if (last) {
          bye = find_bye(tail.substr(at == 0 ? 0 : at - 1));
        }
      }
      state->bye = bye ? "upstream BYE: " + *bye : std::string();
      if (state->bye_tail.size() > 512) {
        state->bye_tail.erase(0, state->bye_tail.size() - 512);
      }
    }
    co_await to.write_all(net::buffer(buffer.data(), n), ec);
    if (ec) {
      if (!state->stopping) {
        state->stop(describe_end(ec, !upward));
      }
      break;
    }
    counter += n;
    state->last_activity = Clock::now();
    if (n == buffer.size() && buffer.size() < max_buffer) {
      buffer.resize(buffer.size() * 2);
    } else if (n < min_buffer / 2 && buffer.size() > min_buffer) {
      buffer = std::vector<char>(min_buffer);
      buffer.shrink_to_fit();
    }
  }
}

}  // namespace

std::optional<std::string> find_bye(std::string_view data) {
  std::optional<std::string> found;
  std::size_t pos = 0;
  while ((pos = data.find("* BYE", pos)) != std::string_view::npos) {
    if (pos == 0 || data[pos - 1] == '\n') {
      const auto end = data.find("\r\n", pos);
      if (end == std::string_view::npos) {
        break;
      }
      auto text = data.substr(pos + 5, end - pos - 5);
      if (!text.empty() && text.front() == ' ') {
        text.remove_prefix(1);
      }
      // The server's words go into a log line and an audit row: a bare LF or an escape
      // sequence in them must not forge or colour a line there.
      found = sanitize_for_log(text, 200);
    }
    pos += 5;
  }
  return found;
}

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
