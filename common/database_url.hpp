#pragma once
// Which engine a `[storage] database` value selects (issue #10): a `postgresql://` or
// `postgres://` URL (libpq's two URI schemes) is PostgreSQL; anything else is an SQLite file path.
// Header-only and dependency-free: the config parser (fuzzed on its own) needs it too.

#include <string_view>

namespace iop {

inline bool is_postgres_url(std::string_view text) {
  return text.starts_with("postgresql://") || text.starts_with("postgres://");
}

}  // namespace iop
