#pragma once
// The one place the project includes Boost.Asio.
//
// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>; GCC 12 then fails
// with "'exchange' is not a member of 'std'" (chriskohlhoff/asio#944), so <utility> comes first.
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>

namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;

namespace iop {
template <class T>
using awaitable = net::awaitable<T>;
}  // namespace iop
