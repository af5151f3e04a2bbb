#pragma once
// Where the credential used for an upstream login came from: reported by the token service and
// recorded in the connection log. (Defined in audit_log.cpp, with the stored spellings.)

#include <optional>
#include <string_view>

namespace iop::storage {

// Where the credential used upstream came from.
enum class TokenSource {
  none,      // no upstream login happened (stored as "")
  redis,     // the Redis cache
  database,  // the SQLite credentials row
  refresh,   // a refresh grant at the token endpoint
  password,  // an upstream password (use_oauth = false)
  memory,    // an in-process cache
};

// The stored spelling: "", "redis", "database", "refresh", "password", "memory".
std::string_view to_string(TokenSource source);
// The inverse of to_string; nullopt for anything else.
std::optional<TokenSource> parse_token_source(std::string_view text);

}  // namespace iop::storage
