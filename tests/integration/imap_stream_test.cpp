// ImapStream's TLS (OpenSSL on the non-blocking socket, issue #9) between two real endpoints on
// loopback: the proxy's server context with the generated certificate, and its client context
// trusting that certificate's CA. Each test runs both sides as coroutines on one io_context,
// with a watchdog that closes both sockets (so a hang fails instead of blocking the suite).

#include "proxy/imap_stream.hpp"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "certs/local_cert.hpp"
#include "certs/tls_context.hpp"
#include "common/deadline.hpp"
#include "tests/support/process.hpp"

namespace iop::proxy {
namespace {

namespace fs = std::filesystem;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;

std::string pattern(std::size_t size) {
  std::string out(size, '\0');
  std::uint32_t x = 2463534242u;
  for (auto& c : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  return out;
}

class ImapStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto made = certs::ensure_server_certificate(cert(), key());
    ASSERT_TRUE(made.has_value()) << made.error().message;
    auto server = certs::make_server_context(cert(), key());
    ASSERT_TRUE(server.has_value()) << server.error().message;
    server_tls_ = *server;
    auto client = certs::make_client_context(certs::ca_certificate_path(cert()));
    ASSERT_TRUE(client.has_value()) << client.error().message;
    client_tls_ = *client;
  }

  fs::path cert() const { return dir_.path() / "server.crt"; }
  fs::path key() const { return dir_.path() / "server.key"; }

  // Connects a client and a server stream over loopback, both TLS, then runs
  // `server_side(server)` and `client_side(client)` concurrently until both end.
  template <class Server, class Client>
  void run(Server server_side, Client client_side) {
    net::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    auto server = std::make_shared<ImapStream>(tcp::socket(ioc), *server_tls_);
    auto client = std::make_shared<ImapStream>(tcp::socket(ioc), *client_tls_);
    Deadline watchdog(ioc.get_executor(), 20s, [server, client, this] {
      timed_out_ = true;
      server->close();
      client->close();
    });
    int running = 2;
    auto done = [&](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
      if (--running == 0) watchdog.disarm();
    };
    net::co_spawn(
        ioc,
        [&]() -> awaitable<void> {
          error_code ec;
          co_await acceptor.async_accept(server->socket(),
                                         net::redirect_error(net::use_awaitable, ec));
          EXPECT_FALSE(ec) << ec.message();
          co_await server->accept_tls(ec);
          EXPECT_FALSE(ec) << "server handshake: " << ec.message();
          if (!ec) co_await server_side(*server);
          co_await server->shutdown(2s);  // the other side's reads end
        },
        done);
    net::co_spawn(
        ioc,
        [&]() -> awaitable<void> {
          error_code ec;
          co_await client->socket().async_connect(acceptor.local_endpoint(),
                                                  net::redirect_error(net::use_awaitable, ec));
          EXPECT_FALSE(ec) << ec.message();
          co_await client->connect_tls("localhost", ec);
          EXPECT_FALSE(ec) << "client handshake: " << ec.message();
          if (!ec) co_await client_side(*client);
          co_await client->shutdown(2s);
        },
        done);
    ioc.run();
    EXPECT_FALSE(timed_out_) << "a side hung";
  }

  test::TempDir dir_;
  std::shared_ptr<net::ssl::context> server_tls_;
  std::shared_ptr<net::ssl::context> client_tls_;
  bool timed_out_ = false;
};

// Reads until `want` bytes or an error, the way the relay does: wait, then take what is there.
awaitable<std::string> read_exactly(ImapStream& s, std::size_t want, std::size_t buffer_bytes,
                                    std::vector<std::size_t>* reads = nullptr) {
  std::string out;
  std::vector<char> buffer(buffer_bytes);
  error_code ec;
  while (out.size() < want) {
    co_await s.wait_readable(ec);
    if (ec) break;
    const auto n = s.read_available(net::buffer(buffer), ec);
    if (ec) break;
    if (reads != nullptr && n > 0) reads->push_back(n);
    out.append(buffer.data(), n);
  }
  co_return out;
}

TEST_F(ImapStreamTest, MegabytesArriveIntactBothWays) {
  const std::string up = pattern(3 << 20);
  const std::string down = pattern((2 << 20) + 7);
  std::string got_up;
  std::string got_down;
  run(
      [&](ImapStream& s) -> awaitable<void> {
        got_up = co_await read_exactly(s, up.size(), 100'000);
        error_code ec;
        co_await s.write_all(net::buffer(down), ec);
        EXPECT_FALSE(ec) << ec.message();
      },
      [&](ImapStream& c) -> awaitable<void> {
        error_code ec;
        // Writes of many sizes, from a byte to several records.
        std::size_t at = 0;
        std::size_t step = 1;
        while (at < up.size() && !ec) {
          const auto n = std::min(step, up.size() - at);
          co_await c.write_all(net::buffer(up.data() + at, n), ec);
          at += n;
          step = step * 3 + 1;
          if (step > 300'000) step = 1;
        }
        EXPECT_FALSE(ec) << ec.message();
        got_down = co_await read_exactly(c, down.size(), 4096);
      });
  EXPECT_TRUE(got_up == up) << "client to server: " << got_up.size() << " of " << up.size();
  EXPECT_TRUE(got_down == down) << "server to client: " << got_down.size() << " of " << down.size();
}

TEST_F(ImapStreamTest, OneReadTakesEveryRecordAlreadyReceived) {
  // 64 KiB written in one write_all is four TLS records; once the receiver's TCP has them all
  // (the sender's send queue is empty: everything acknowledged), one read_available takes all
  // four, whether OpenSSL already took some with the handshake's last message or not.
  const std::string data = pattern(64 * 1024);
  std::vector<std::size_t> reads;
  bool written = false;
  run(
      [&](ImapStream& s) -> awaitable<void> {
        net::steady_timer tick(co_await net::this_coro::executor);
        while (!written) {
          tick.expires_after(1ms);
          co_await tick.async_wait(net::use_awaitable);
        }
        const auto got = co_await read_exactly(s, data.size(), 128 * 1024, &reads);
        EXPECT_EQ(got.size(), data.size());
      },
      [&](ImapStream& c) -> awaitable<void> {
        error_code ec;
        co_await c.write_all(net::buffer(data), ec);
        EXPECT_FALSE(ec) << ec.message();
        // write_all returns once the kernel has the bytes; the receiver's window may hold part
        // of them back a while (it opens as data arrives).
        net::steady_timer tick(co_await net::this_coro::executor);
        int unacknowledged = 0;
        while (::ioctl(c.socket().native_handle(), SIOCOUTQ, &unacknowledged) == 0 &&
               unacknowledged > 0) {
          tick.expires_after(1ms);
          co_await tick.async_wait(net::use_awaitable);
        }
        written = true;
        const auto rest = co_await read_exactly(c, 1, 16);  // until the server closes
        EXPECT_TRUE(rest.empty());
      });
  ASSERT_FALSE(reads.empty());
  EXPECT_EQ(reads.front(), data.size()) << "the first read took only part of what was there";
}

TEST_F(ImapStreamTest, AWriteOfSeveralRecordsLeavesNothingHeldBack) {
  // Two records, sent with MSG_MORE so they leave in one segment: once write_all returns, the
  // kernel must have sent them (nothing "not sent" in the queue), or the tail of a FETCH would
  // wait for the next write. 20,000 bytes fit the receiver's initial window.
  const std::string data = pattern(20'000);
  int not_sent = -1;
  run(
      [&](ImapStream& s) -> awaitable<void> {
        error_code ec;
        // The session ticket follows the first write and would push whatever that write left.
        co_await s.write_all(net::buffer(std::string_view("* OK\r\n")), ec);
        EXPECT_FALSE(ec) << ec.message();
        co_await s.write_all(net::buffer(data), ec);
        EXPECT_FALSE(ec) << ec.message();
        EXPECT_EQ(::ioctl(s.socket().native_handle(), SIOCOUTQNSD, &not_sent), 0);
        const auto rest = co_await read_exactly(s, 1, 16);  // until the client closes
        EXPECT_TRUE(rest.empty());
      },
      [&](ImapStream& c) -> awaitable<void> {
        const auto got = co_await read_exactly(c, 6 + data.size(), 64 * 1024);
        EXPECT_EQ(got, "* OK\r\n" + data);
      });
  EXPECT_EQ(not_sent, 0) << "bytes of the write were still held back after it returned";
}

TEST_F(ImapStreamTest, BytesThatCameWithTheHandshakeAreReadWithoutWaiting) {
  // The client writes right after its handshake, before the server has looked: whether those
  // bytes are read with the client's Finished (then inside OpenSSL, where waiting on the
  // socket would never see them) or later, the first read returns them.
  bool written = false;
  std::string got;
  run(
      [&](ImapStream& s) -> awaitable<void> {
        net::steady_timer tick(co_await net::this_coro::executor);
        while (!written) {
          tick.expires_after(1ms);
          co_await tick.async_wait(net::use_awaitable);
        }
        got = co_await read_exactly(s, 5, 64);
      },
      [&](ImapStream& c) -> awaitable<void> {
        error_code ec;
        co_await c.write_all(net::buffer(std::string_view("hello")), ec);
        written = true;
        co_await read_exactly(c, 1, 16);
      });
  EXPECT_EQ(got, "hello");
}

// What the client's OpenSSL took in after the handshake, in order: the inner content type of
// each TLS 1.3 record (23 application data, 22 handshake: here only NewSessionTicket).
void record_inner_types(int write_p, int /*version*/, int content_type, const void* buf,
                        std::size_t len, SSL* /*ssl*/, void* arg) {
  if (write_p == 0 && content_type == SSL3_RT_INNER_CONTENT_TYPE && len == 1) {
    static_cast<std::vector<int>*>(arg)->push_back(*static_cast<const unsigned char*>(buf));
  }
}

TEST_F(ImapStreamTest, TheSessionTicketFollowsTheGreeting) {
  // OpenSSL would send the ticket at the end of the handshake, ahead of the greeting, and the
  // client would take it in (a session to deserialize) before it could read the greeting. The
  // server sends it after its first write instead; the client still gets one.
  std::vector<int> received;
  bool resumable = false;
  run(
      [&](ImapStream& s) -> awaitable<void> {
        error_code ec;
        co_await s.write_all(net::buffer(std::string_view("* OK ready\r\n")), ec);
        EXPECT_FALSE(ec) << ec.message();
        EXPECT_EQ(co_await read_exactly(s, 3, 64), "a\r\n");
        co_await s.write_all(net::buffer(std::string_view("b\r\n")), ec);
      },
      [&](ImapStream& c) -> awaitable<void> {
        SSL_set_msg_callback(c.native_handle(), record_inner_types);
        SSL_set_msg_callback_arg(c.native_handle(), &received);
        EXPECT_EQ(co_await read_exactly(c, 12, 64), "* OK ready\r\n");
        error_code ec;
        co_await c.write_all(net::buffer(std::string_view("a\r\n")), ec);
        EXPECT_EQ(co_await read_exactly(c, 3, 64), "b\r\n");
        resumable = SSL_SESSION_is_resumable(SSL_get0_session(c.native_handle())) == 1;
      });
  ASSERT_GE(received.size(), 3u);
  EXPECT_EQ(received.front(), SSL3_RT_APPLICATION_DATA) << "the greeting comes first";
  EXPECT_EQ(received[1], SSL3_RT_HANDSHAKE) << "then the ticket";
  EXPECT_EQ(std::count(received.begin(), received.end(), SSL3_RT_HANDSHAKE), 1);
  EXPECT_TRUE(resumable) << "the client can resume with the ticket it got";
}

TEST_F(ImapStreamTest, NothingToReadIsZeroNotAnError) {
  run(
      [&](ImapStream& s) -> awaitable<void> {
        std::array<char, 16> buffer{};
        error_code ec;
        EXPECT_EQ(s.read_available(net::buffer(buffer), ec), 0u);
        EXPECT_FALSE(ec) << ec.message();
        co_await s.shutdown(2s);
      },
      [&](ImapStream& c) -> awaitable<void> { co_await read_exactly(c, 1, 16); });
}

TEST_F(ImapStreamTest, CloseNotifyIsEofAndAClosedSocketIsTruncation) {
  error_code polite;
  error_code abrupt;
  std::string before_abrupt;
  run(
      [&](ImapStream& s) -> awaitable<void> {
        std::array<char, 16> buffer{};
        // The client's close_notify: EOF.
        const auto n = co_await s.read_some(net::buffer(buffer), polite);
        EXPECT_EQ(n, 0u);
        co_await s.shutdown(2s);
      },
      [&](ImapStream& c) -> awaitable<void> { co_await c.shutdown(2s); });
  EXPECT_EQ(polite, net::error::eof) << polite.message();

  run(
      [&](ImapStream& s) -> awaitable<void> {
        // The bytes before the end come first, the end on the next read.
        std::array<char, 16> buffer{};
        error_code ec;
        auto n = co_await s.read_some(net::buffer(buffer), ec);
        before_abrupt.assign(buffer.data(), n);
        EXPECT_FALSE(ec) << ec.message();
        if (before_abrupt.size() < 3) {
          n = co_await s.read_some(net::buffer(buffer), ec);
          before_abrupt.append(buffer.data(), n);
        }
        n = co_await s.read_some(net::buffer(buffer), abrupt);
        EXPECT_EQ(n, 0u);
      },
      [&](ImapStream& c) -> awaitable<void> {
        error_code ec;
        co_await c.write_all(net::buffer(std::string_view("abc")), ec);
        c.close();  // no close_notify
      });
  EXPECT_EQ(before_abrupt, "abc");
  EXPECT_EQ(abrupt, net::ssl::error::stream_truncated) << abrupt.message();
  EXPECT_TRUE(is_normal_close(abrupt));
}

}  // namespace
}  // namespace iop::proxy
