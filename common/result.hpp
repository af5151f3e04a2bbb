#pragma once
// Result<T>: the project's one error-carrying return type (std::expected, C++23).

#include <fmt/format.h>

#include <expected>
#include <string>
#include <string_view>

namespace iop {

enum class Errc {
  invalid_argument,       // bad input from a user or a peer (email, token syntax, config)
  not_found,              // no such account
  already_exists,         // the account exists already
  needs_reauth,           // the refresh token is dead: the account must be authorized again
  endpoint_unavailable,   // token endpoint unreachable, timed out or answered 408/429/5xx
  endpoint_bad_response,  // token endpoint answered something we cannot use
  storage_unavailable,    // the database failed (I/O, locked too long, full disk)
  credentials_corrupt,    // a stored secret does not decrypt or a row is malformed
  key_error,              // the master key is missing, unreadable or does not fit the database
  config_error,           // configuration file problem
  internal,               // a broken invariant
};

std::string_view to_string(Errc code);

// An error for operators: `message` says what happened and what to do, and never holds a secret.
struct Error {
  Errc code = Errc::internal;
  std::string message;
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Errc code, std::string message) {
  return std::unexpected(Error{code, std::move(message)});
}

}  // namespace iop

// Early return of an error, absl-style. No GNU statement expressions (-Wpedantic), so the
// assigning forms are statements, not expressions. `expr` may hold commas (it is __VA_ARGS__)
// and, in the IOP_CO_ forms, a co_await.

// Inside a function returning Result<...>: evaluates `expr` (a Result<void>, or a Result whose
// value is not needed; an lvalue is not copied) and returns its error if it has one.
#define IOP_TRY(...)                                      \
  do {                                                    \
    if (auto&& iop_try_rc = (__VA_ARGS__); !iop_try_rc) { \
      return std::unexpected(iop_try_rc.error());         \
    }                                                     \
  } while (false)

// Inside a function returning Result<...>: evaluates `expr` (a Result<T>); returns its error,
// or moves its value into `lhs`, which may declare a variable:
//   IOP_TRY_ASSIGN(auto row, store.get(email));
//   IOP_TRY_ASSIGN(creds.access_token, open_secret(blob));
#define IOP_TRY_ASSIGN(lhs, ...) \
  IOP_TRY_ASSIGN_IMPL_(IOP_CONCAT_(iop_try_value_, __LINE__), return, lhs, __VA_ARGS__)

// The same two for coroutines returning awaitable<Result<...>> (co_return).
#define IOP_CO_TRY(...)                                   \
  do {                                                    \
    if (auto&& iop_try_rc = (__VA_ARGS__); !iop_try_rc) { \
      co_return std::unexpected(iop_try_rc.error());      \
    }                                                     \
  } while (false)

#define IOP_CO_TRY_ASSIGN(lhs, ...) \
  IOP_TRY_ASSIGN_IMPL_(IOP_CONCAT_(iop_try_value_, __LINE__), co_return, lhs, __VA_ARGS__)

#define IOP_CONCAT_INNER_(a, b) a##b
#define IOP_CONCAT_(a, b) IOP_CONCAT_INNER_(a, b)
#define IOP_TRY_ASSIGN_IMPL_(tmp, ret, lhs, ...) \
  auto tmp = (__VA_ARGS__);                      \
  if (!tmp) {                                    \
    ret std::unexpected(std::move(tmp).error()); \
  }                                              \
  lhs = std::move(*tmp)

template <>
struct fmt::formatter<iop::Error> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const iop::Error& e, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(e.message, ctx);
  }
};
