#pragma once
// Opening the project's PostgreSQL database (issue #10): the connection and the schema
// migrations, the counterpart of storage/database.hpp for SQLite. The schema is the same, step
// for step, in PostgreSQL's dialect (bytea for BLOB, bigint for INTEGER, a trigger function for
// the append-only connection log), so both engines report the same schema version.
//
// Internal to storage/: it exposes pg::Connection, which no header outside storage/ may show.

#include <cstdint>

#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/postgres.hpp"

namespace iop::storage {

// The advisory lock taken (inside a transaction) before reading the key check in meta: two
// instances opening a new database at once must not both find no key check and write one each
// (with two different keys, one would win silently). The ASCII of "iop-keyc".
inline constexpr std::int64_t pg_key_check_lock = 0x696f702d6b657963;

// The number of PostgreSQL migration steps; equal to current_schema_version() (a test checks).
std::int64_t pg_schema_steps();

// Connects to `target` and applies the pending migrations, each step in its own transaction
// that first takes a transaction-level advisory lock, so instances starting at the same moment
// on a new database run every step once, one after the other.
//
// Errc::storage_unavailable: the server cannot be reached, the user may not create the tables,
// or the schema version is newer than this program knows or invalid.
Result<pg::Connection> open_pg_database(const pg::Target& target, const Secret& password);

// Connects to `target` for reading only: no migration runs, so a role with SELECT rights only
// can read, and a mistyped database gets no tables. Errc::storage_unavailable when the schema is
// missing or not the current version.
Result<pg::Connection> open_pg_database_for_reading(const pg::Target& target,
                                                    const Secret& password);

// The schema version recorded in the database (0: none yet).
Result<std::int64_t> pg_schema_version(pg::Connection& conn);

}  // namespace iop::storage
