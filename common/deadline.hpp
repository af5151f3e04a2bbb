#pragma once
// The one guarded deadline: Asio 1.18 has no per-operation cancellation (no cancel_after), so a
// timer that closes the socket (or cancels the resolver) at the deadline is how a pending read,
// write, connect or handshake is bounded (STYLE.md §3.3 watchdog). What the waiting operation
// then sees (operation_aborted, bad_descriptor, ...) is whatever the action causes; fired() lets
// the caller tell "timed out" from any other error.
//
//   Deadline deadline(executor, 30s, [&socket] { boost::system::error_code e; socket.close(e); });
//   co_await socket.async_read_some(..., redirect_error(use_awaitable, ec));
//   if (ec && deadline.fired()) { /* timed out */ }
//
// The action runs at most once, on the timer's executor, and never after disarm() or the
// Deadline's destruction, even when the expiry was already queued: so it may hold plain
// references to objects that outlive the Deadline (declare the Deadline after them). Use it
// from the executor (strand) it was made with: its state is not locked.

#include <chrono>
#include <functional>
#include <memory>
#include <utility>

#include "common/asio.hpp"

namespace iop {

class Deadline {
 public:
  Deadline(net::any_io_executor executor, std::chrono::steady_clock::duration after,
           std::function<void()> on_expiry)
      : state_(std::make_shared<State>(State{true, false, std::move(on_expiry)})),
        timer_(std::move(executor)) {
    timer_.expires_after(after);
    timer_.async_wait([state = state_](const boost::system::error_code& ec) {
      // The flag, not the error code, decides: an expiry queued before disarm() still arrives
      // with success.
      if (!ec && state->armed) {
        state->armed = false;
        state->fired = true;
        auto action = std::move(state->on_expiry);
        action();
      }
    });
  }

  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  ~Deadline() { disarm(); }

  // From now on the action never runs; the timer's wait ends (so it holds no io_context open).
  void disarm() {
    state_->armed = false;
    state_->on_expiry = nullptr;
    timer_.cancel();
  }

  // Whether the deadline passed and the action ran.
  [[nodiscard]] bool fired() const { return state_->fired; }

 private:
  struct State {
    bool armed;
    bool fired;
    std::function<void()> on_expiry;
  };
  // Shared with the pending wait, which may outlive this object.
  std::shared_ptr<State> state_;
  net::steady_timer timer_;
};

}  // namespace iop
