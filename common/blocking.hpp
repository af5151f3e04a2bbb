#pragma once
// The one hop from an I/O coroutine to a blocking thread pool and back (SQLite, Redis, curl,
// scrypt, audit writes must never run on an I/O thread: docs/design.md).
//
//   auto row = co_await run_on_pool(blocking_, [&] { return store.get(email); });
//
// `fn` runs once on `pool`; its value, or the exception it throws, comes back to the awaiting
// coroutine (co_spawn with use_awaitable rethrows it there, STYLE.md §0 check 4). The awaiting
// frame is suspended until then, so `fn` may capture the caller's locals by reference.
//
// GCC 12 destroys some temporaries of a co_await expression twice (PR 100611; docs/design.md):
// pass a lambda whose captures are references or trivially destructible as a temporary, but
// name a lambda that owns memory and hand it over with std::move. This function is not itself a
// coroutine, so it adds no coroutine parameter copy of its own.

#include <type_traits>
#include <utility>

#include "common/asio.hpp"

namespace iop {

template <class Executor, class F>
net::awaitable<std::invoke_result_t<F&>> run_on_pool(Executor pool, F fn) {
  using R = std::invoke_result_t<F&>;
  // The spawned frame owns `fn` until it has run.
  return net::co_spawn(
      std::move(pool), [f = std::move(fn)]() mutable -> net::awaitable<R> { co_return f(); },
      net::use_awaitable);
}

}  // namespace iop
