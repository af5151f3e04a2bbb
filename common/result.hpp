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
  int aadsts = 0;  // the Microsoft AADSTS code when the token endpoint gave one
};

template <class T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Errc code, std::string message, int aadsts = 0) {
  return std::unexpected(Error{code, std::move(message), aadsts});
}

}  // namespace iop

// Inside a function returning Result<...>: evaluates `expr` (a Result<void>) and returns its error
// if it has one.
#define IOP_TRY(expr)                             \
  do {                                            \
    if (auto iop_try_rc = (expr); !iop_try_rc) {  \
      return std::unexpected(iop_try_rc.error()); \
    }                                             \
  } while (false)

template <>
struct fmt::formatter<iop::Error> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const iop::Error& e, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(e.message, ctx);
  }
};
