#include "common/deadline.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>

namespace iop {
namespace {

using namespace std::chrono_literals;

TEST(Deadline, RunsTheActionOnceWhenTheTimePasses) {
  net::io_context ioc;
  int runs = 0;
  Deadline deadline(ioc.get_executor(), 0ms, [&runs] { ++runs; });
  EXPECT_FALSE(deadline.fired());
  ioc.run();
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(deadline.fired());
}

// The expiry is already queued with success when the owner disarms (the usual race: the step
// being bounded finishes in the same pass): the action must not run. `first` has the earlier
// expiry, so Asio queues both completions in one pass and runs `first`'s handler before the
// deadline's.
TEST(Deadline, DisarmedWhileItsExpiryIsQueuedDoesNotRunTheAction) {
  net::io_context ioc;
  net::steady_timer first(ioc);
  first.expires_at(std::chrono::steady_clock::now() - 1h);
  int runs = 0;
  Deadline deadline(ioc.get_executor(), 0ms, [&runs] { ++runs; });
  first.async_wait([&deadline](const boost::system::error_code&) { deadline.disarm(); });
  ioc.run();
  EXPECT_EQ(runs, 0);
  EXPECT_FALSE(deadline.fired());
}

// The same, destroyed instead of disarmed: the action (which may refer to objects gone with the
// owner's frame) must not run.
TEST(Deadline, DestroyedWhileItsExpiryIsQueuedDoesNotRunTheAction) {
  net::io_context ioc;
  net::steady_timer first(ioc);
  first.expires_at(std::chrono::steady_clock::now() - 1h);
  int runs = 0;
  std::optional<Deadline> deadline;
  deadline.emplace(ioc.get_executor(), 0ms, [&runs] { ++runs; });
  first.async_wait([&deadline](const boost::system::error_code&) { deadline.reset(); });
  ioc.run();
  EXPECT_EQ(runs, 0);
}

// Disarming releases the io_context at once: a far deadline does not keep run() busy.
TEST(Deadline, DisarmEndsTheWait) {
  net::io_context ioc;
  Deadline deadline(ioc.get_executor(), std::chrono::hours(1), [] {});
  deadline.disarm();
  ioc.poll();
  EXPECT_TRUE(ioc.stopped());
  EXPECT_FALSE(deadline.fired());
}

// The use it is made for: a read that never completes ends when the deadline closes the socket.
TEST(Deadline, ClosingTheSocketEndsAPendingRead) {
  net::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::address_v4::loopback(), 0));
  tcp::socket client(ioc);
  client.connect(acceptor.local_endpoint());
  tcp::socket server = acceptor.accept();

  Deadline deadline(ioc.get_executor(), 0ms, [&server] {
    boost::system::error_code ignored;
    server.close(ignored);
  });
  char byte = 0;
  std::optional<boost::system::error_code> read_error;
  server.async_read_some(net::buffer(&byte, 1), [&](const boost::system::error_code& ec,
                                                    std::size_t) { read_error = ec; });
  ioc.run();
  ASSERT_TRUE(read_error.has_value());
  EXPECT_EQ(*read_error, net::error::operation_aborted);
  EXPECT_TRUE(deadline.fired());
  EXPECT_FALSE(server.is_open());
}

}  // namespace
}  // namespace iop
