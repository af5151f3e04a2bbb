#include "auth/loopback_listener.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/asio.hpp"

namespace iop::auth {
namespace {

using namespace std::chrono_literals;
using boost::system::error_code;

// A minimal HTTP client: sends `request` as-is, returns everything until the server closes.
awaitable<std::string> exchange(int port, std::string request) {
  tcp::socket socket(co_await net::this_coro::executor);
  co_await socket.async_connect(
      tcp::endpoint(net::ip::address_v4::loopback(), static_cast<unsigned short>(port)),
      net::use_awaitable);
  co_await net::async_write(socket, net::buffer(request), net::use_awaitable);
  std::string response;
  std::array<char, 4096> buffer{};
  for (;;) {
    error_code ec;
    const auto n = co_await socket.async_read_some(net::buffer(buffer),
                                                   net::redirect_error(net::use_awaitable, ec));
    response.append(buffer.data(), n);
    if (ec) {
      break;
    }
  }
  co_return response;
}

std::string get(int port, std::string_view target) {
  return fmt::format("GET {} HTTP/1.1\r\nHost: localhost:{}\r\nAccept: text/html\r\n\r\n", target,
                     port);
}

// Sends the requests one after the other, keeping each response.
awaitable<void> browser(int port, std::vector<std::string> requests,
                        std::shared_ptr<std::vector<std::string>> responses) {
  for (auto& request : requests) {
    responses->push_back(co_await exchange(port, std::move(request)));
  }
}

// Opens a connection and sends nothing until the server closes it (a browser's speculative
// connection).
awaitable<void> idle_connection(int port, std::shared_ptr<bool> closed) {
  tcp::socket socket(co_await net::this_coro::executor);
  co_await socket.async_connect(
      tcp::endpoint(net::ip::address_v4::loopback(), static_cast<unsigned short>(port)),
      net::use_awaitable);
  std::array<char, 16> buffer{};
  error_code ec;
  co_await socket.async_read_some(net::buffer(buffer), net::redirect_error(net::use_awaitable, ec));
  *closed = true;
}

struct Run {
  std::optional<Result<Secret>> result;
  std::vector<std::string> responses;
};

// Runs wait_for_code and, alongside, the browser's requests; returns when both are done.
Run run_listener(std::string state, std::chrono::milliseconds timeout,
                 std::vector<std::string> requests_for_port(int)) {
  net::io_context ioc;
  auto listener = LoopbackListener::open(ioc);
  EXPECT_TRUE(listener) << listener.error().message;
  Run run;
  auto responses = std::make_shared<std::vector<std::string>>();
  net::co_spawn(ioc, listener->wait_for_code(std::move(state), timeout),
                [&run](std::exception_ptr e, Result<Secret> r) {
                  if (e) std::rethrow_exception(e);
                  run.result.emplace(std::move(r));
                });
  net::co_spawn(ioc, browser(listener->port(), requests_for_port(listener->port()), responses),
                [](std::exception_ptr e) {
                  if (e) std::rethrow_exception(e);
                });
  ioc.run();
  run.responses = *responses;
  return run;
}

TEST(LoopbackListener, RedirectUriNamesLocalhostAndThePort) {
  net::io_context ioc;
  auto listener = LoopbackListener::open(ioc);
  ASSERT_TRUE(listener) << listener.error().message;
  EXPECT_GT(listener->port(), 0);
  EXPECT_EQ(listener->redirect_uri(), fmt::format("http://localhost:{}/", listener->port()));
}

TEST(LoopbackListener, IgnoresOtherPathsThenTakesTheCode) {
  const auto run = run_listener("S", 30s, [](int port) {
    return std::vector<std::string>{get(port, "/favicon.ico"), get(port, "/"),
                                    get(port, "/?code=abc&state=S")};
  });
  ASSERT_TRUE(run.result);
  ASSERT_TRUE(*run.result) << run.result->error().message;
  EXPECT_EQ((*run.result)->reveal(), "abc");
  ASSERT_EQ(run.responses.size(), 3u);
  EXPECT_TRUE(run.responses[0].starts_with("HTTP/1.1 404 ")) << run.responses[0];
  EXPECT_TRUE(run.responses[1].starts_with("HTTP/1.1 404 ")) << run.responses[1];
  EXPECT_TRUE(run.responses[2].starts_with("HTTP/1.1 200 OK\r\n")) << run.responses[2];
  EXPECT_NE(run.responses[2].find("Connection: close\r\n"), std::string::npos);
  EXPECT_NE(run.responses[2].find("Signed in \u2014 you can close this window and return to the "
                                  "terminal"),
            std::string::npos)
      << run.responses[2];
}

TEST(LoopbackListener, WrongStateFailsAndThePageSaysWhy) {
  const auto run = run_listener("S", 30s, [](int port) {
    return std::vector<std::string>{get(port, "/?code=abc&state=other")};
  });
  ASSERT_TRUE(run.result);
  ASSERT_FALSE(*run.result);
  EXPECT_NE(run.result->error().message.find("state mismatch"), std::string::npos);
  ASSERT_EQ(run.responses.size(), 1u);
  EXPECT_TRUE(run.responses[0].starts_with("HTTP/1.1 400 ")) << run.responses[0];
  EXPECT_NE(run.responses[0].find("does not belong to this request (state mismatch)"),
            std::string::npos)
      << run.responses[0];
}

TEST(LoopbackListener, ErrorRedirectIsExplainedAndHtmlEscaped) {
  const auto run = run_listener("S", 30s, [](int port) {
    return std::vector<std::string>{get(
        port, "/?error=invalid_request&error_description=AADSTS99999%3A+%3Cscript%3Ex%26&state=S")};
  });
  ASSERT_TRUE(run.result);
  ASSERT_FALSE(*run.result);
  EXPECT_NE(run.result->error().message.find("AADSTS99999"), std::string::npos)
      << run.result->error().message;
  ASSERT_EQ(run.responses.size(), 1u);
  EXPECT_EQ(run.responses[0].find("<script>"), std::string::npos) << run.responses[0];
  EXPECT_NE(run.responses[0].find("&lt;script&gt;x&amp;"), std::string::npos) << run.responses[0];
}

TEST(LoopbackListener, OversizedRequestIsRefusedAndIgnored) {
  const auto run = run_listener("S", 30s, [](int port) {
    return std::vector<std::string>{
        "GET /?code=big&state=S HTTP/1.1\r\nX-Pad: " + std::string(9000, 'a') + "\r\n\r\n",
        "POST /?code=abc&state=S HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        get(port, "/?code=abc&state=S")};
  });
  ASSERT_TRUE(run.result);
  ASSERT_TRUE(*run.result) << run.result->error().message;
  EXPECT_EQ((*run.result)->reveal(), "abc");
  ASSERT_EQ(run.responses.size(), 3u);
  EXPECT_TRUE(run.responses[0].starts_with("HTTP/1.1 431 ")) << run.responses[0].substr(0, 80);
  EXPECT_TRUE(run.responses[1].starts_with("HTTP/1.1 405 ")) << run.responses[1].substr(0, 80);
}

TEST(LoopbackListener, AnIdleConnectionDoesNotHoldUpTheRedirect) {
  net::io_context ioc;
  auto listener = LoopbackListener::open(ioc);
  ASSERT_TRUE(listener);
  std::optional<Result<Secret>> result;
  auto idle_closed = std::make_shared<bool>(false);
  auto responses = std::make_shared<std::vector<std::string>>();
  net::co_spawn(ioc, listener->wait_for_code("S", 30s),
                [&result](std::exception_ptr e, Result<Secret> r) {
                  if (e) std::rethrow_exception(e);
                  result.emplace(std::move(r));
                });
  net::co_spawn(ioc, idle_connection(listener->port(), idle_closed), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  net::co_spawn(ioc,
                browser(listener->port(), {get(listener->port(), "/?code=xyz&state=S")}, responses),
                [](std::exception_ptr e) {
                  if (e) std::rethrow_exception(e);
                });
  ioc.run();
  ASSERT_TRUE(result && *result);
  EXPECT_EQ((*result)->reveal(), "xyz");
  EXPECT_TRUE(*idle_closed);  // closed when the wait finished, not left to its deadline
}

TEST(LoopbackListener, TimesOutWithAClearMessage) {
  net::io_context ioc;
  auto listener = LoopbackListener::open(ioc);
  ASSERT_TRUE(listener);
  std::optional<Result<Secret>> result;
  net::co_spawn(ioc, listener->wait_for_code("S", 20ms),
                [&result](std::exception_ptr e, Result<Secret> r) {
                  if (e) std::rethrow_exception(e);
                  result.emplace(std::move(r));
                });
  ioc.run();
  ASSERT_TRUE(result);
  ASSERT_FALSE(*result);
  EXPECT_EQ(result->error().code, Errc::invalid_argument);
  EXPECT_EQ(result->error().message,
            "no sign-in arrived within 20ms; run the command again (or use --paste / "
            "--device-code on a machine without a browser)");
}

}  // namespace
}  // namespace iop::auth
