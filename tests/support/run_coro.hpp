#pragma once
// Running coroutines to completion in tests, deterministically: co_spawn with a handler that
// keeps the value or the exception, then run the io_context.

#include <exception>
#include <optional>
#include <thread>
#include <vector>

#include "common/asio.hpp"

namespace iop::test {

template <class T, class F>
T run_coro(F make) {
  net::io_context ioc;
  std::optional<T> value;
  std::exception_ptr error;
  net::co_spawn(ioc, std::move(make), [&](std::exception_ptr e, T v) {
    error = e;
    if (!e) value.emplace(std::move(v));
  });
  ioc.run();
  if (error) std::rethrow_exception(error);
  return std::move(*value);
}

// Runs `count` coroutines made by `make(i)` concurrently on `threads` threads; returns results
// in order.
template <class T, class F>
std::vector<T> run_concurrently(int count, int threads, F make) {
  net::io_context ioc;
  std::vector<std::optional<T>> results(static_cast<std::size_t>(count));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    net::co_spawn(ioc, make(i), [&results, &errors, i](std::exception_ptr e, T v) {
      errors[static_cast<std::size_t>(i)] = e;
      if (!e) results[static_cast<std::size_t>(i)].emplace(std::move(v));
    });
  }
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& th : pool) th.join();
  std::vector<T> out;
  for (int i = 0; i < count; ++i) {
    if (errors[static_cast<std::size_t>(i)])
      std::rethrow_exception(errors[static_cast<std::size_t>(i)]);
    out.push_back(std::move(*results[static_cast<std::size_t>(i)]));
  }
  return out;
}

}  // namespace iop::test
