#pragma once
// Opening the project's SQLite database file: creation with a private mode, the per-connection
// settings and the schema migrations, in one place shared by every connection that uses the file
// (the credentials store and the audit log each open their own).
//
// Internal to storage/: it exposes sqlite::Database, which no header outside storage/ may show.

#include <cstdint>
#include <filesystem>

#include "common/result.hpp"
#include "storage/sqlite.hpp"

namespace iop::storage {

// How a connection commits (SQLite `PRAGMA synchronous`, per connection, in WAL mode).
enum class Durability {
  // FULL: every commit fsyncs the WAL, so a committed transaction survives a power failure.
  full,
  // NORMAL: commits are atomic and survive a process crash, but the last commits before a power
  // failure may be rolled back (never torn, never corrupting the file). No fsync per commit.
  normal,
};

// The schema version this program writes and understands (the number of migration steps).
std::int64_t current_schema_version();

// Opens the database at `path` for reading and writing, creating the file (mode 0600) when it is
// missing. Then sets WAL journal mode, `durability`, foreign keys and a busy timeout, and applies
// the pending migrations, each step in its own IMMEDIATE transaction so that two processes
// opening a new file at once cannot run a step twice.
//
// Errc::storage_unavailable: the file cannot be opened, WAL is not possible (a network file
// system), or the schema version is newer than current_schema_version() (written by a newer
// program) or invalid. Blocks on disk I/O.
Result<sqlite::Database> open_database(const std::filesystem::path& path, Durability durability);

}  // namespace iop::storage
