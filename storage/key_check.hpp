#pragma once
// The sealed key check in `meta`: which master key a database file belongs to, and how far its
// contents are authenticated under that key. Sealed (AES-GCM, storage/sealed.hpp), so nobody
// without the key can write one, and so nobody can move it to a later version or back, except by
// putting back an older copy of the whole value from a backup of this very file.
//
// Internal to storage/ (it takes sqlite::Database). Shared by the credentials store (the row
// MACs, v2) and the connection log (the keyed chain, v3): one value, so a step taken by one is
// never undone by the other.

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

// Reads and opens the key check. Errc::key_error when it does not open under `key` (another
// key) or holds an unknown text.
Result<KeyCheck> read_key_check(sqlite::Database& db, const MasterKey& key);

// Writes `version` (not absent), inserting or replacing. Only ever moves forward: a caller
// checks the stored version first.
Result<void> write_key_check(sqlite::Database& db, const MasterKey& key, KeyCheck version);

}  // namespace iop::storage
