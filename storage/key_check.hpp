#pragma once
// The sealed key check in `meta`: which master key a database file belongs to, and how far its
// contents are authenticated under that key. Sealed (AES-GCM, storage/sealed.hpp), so nobody
// without the key can write one, and so nobody can move it to a later version or back, except by
// putting back an older copy of the whole value from a backup of this very file.
//
// Internal to storage/ (it takes sqlite::Database). Shared by the credentials store (the row
// MACs, v2) and the connection log (the keyed chain, v3): one value, so a step taken by one is
// never undone by the other.

#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "storage/sealed.hpp"
#include "storage/sqlite.hpp"

namespace iop::storage {

enum class KeyCheck {
  absent,  // a new file: nothing was written under any key yet
  v1,      // schema v3 and older: account rows without MACs
  v2,      // every account row has a MAC (issue #7)
  v3,      // and the connection log is keyed (issue #8): no plain-hashed head is ever keyed again
};

// The meta key the check is stored under.
inline constexpr std::string_view key_check_name = "key_check";

// Opens a stored key check (nullopt: none stored, KeyCheck::absent). `where` names the database
// for the message. Errc::key_error when it does not open under `key` or holds an unknown text.
// Pure: each engine reads and writes the meta row itself.
Result<KeyCheck> decode_key_check(const std::optional<std::string>& sealed, const MasterKey& key,
                                  std::string_view where);

// The sealed value that records `version` (not absent).
Result<std::string> encode_key_check(const MasterKey& key, KeyCheck version);

// Reads and opens the key check. Errc::key_error when it does not open under `key` (another
// key) or holds an unknown text.
Result<KeyCheck> read_key_check(sqlite::Database& db, const MasterKey& key);

// Writes `version` (not absent), inserting or replacing. Only ever moves forward: a caller
// checks the stored version first.
Result<void> write_key_check(sqlite::Database& db, const MasterKey& key, KeyCheck version);

}  // namespace iop::storage
