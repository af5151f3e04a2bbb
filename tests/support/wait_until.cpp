#include "tests/support/wait_until.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

namespace iop::test {

bool poll_until(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  using clock = std::chrono::steady_clock;
  constexpr std::chrono::milliseconds longest_interval{20};
  const auto deadline = clock::now() + limit;
  std::chrono::milliseconds interval{1};
  for (;;) {
    if (pred()) {
      return true;
    }
    const auto now = clock::now();
    if (now >= deadline) {
      return false;
    }
    // Never past the bound, so the last check happens at it.
    std::this_thread::sleep_for(std::min<clock::duration>(interval, deadline - now));
    interval = std::min(interval * 2, longest_interval);
  }
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit,
                std::string_view what) {
  if (poll_until(pred, limit)) {
    return true;
  }
  ADD_FAILURE() << "timed out after " << limit.count() << " ms waiting for "
                << (what.empty() ? std::string_view("a condition") : what);
  return false;
}

}  // namespace iop::test
