#include "storage/database.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <string>
#include <string_view>

namespace iop::storage {

namespace {

using sqlite::Database;
using sqlite::Statement;
using sqlite::Transaction;

// Schema history: step i (0-based) brings the database from user_version i to i + 1. Append
// new steps; never edit a released one, since databases in the field already ran it.
constexpr std::array<std::string_view, 6> migrations = {
    R"sql(
CREATE TABLE mail_credentials (
  email TEXT PRIMARY KEY,
  use_oauth INTEGER NOT NULL,
  access_token BLOB,
  refresh_token BLOB,
  token_expiry INTEGER NOT NULL DEFAULT 0,
  refreshed_at_ms INTEGER NOT NULL DEFAULT 0,
  password BLOB,
  local_password_hash TEXT,
  upstream_host TEXT,
  upstream_port INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth')),
  status_reason TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value BLOB
);
)sql",
    // v2: the connection log (storage/audit_log.hpp). Rows are hash-chained; ids are assigned by
    // AuditLog as 1, 2, 3... with no gaps, and its head (row count and last hash) lives in meta.
    // No CHECK on outcome or token_source: a later version may add values without rebuilding
    // the table (SQLite cannot alter a CHECK); AuditLog writes only values it knows.
    // The triggers stop casual edits (a stray UPDATE in the sqlite3 shell); they are no defence
    // against someone who can drop them: the hash chain is what detects that.
    R"sql(
CREATE TABLE connection_log (
  id INTEGER PRIMARY KEY,
  started_at_ms INTEGER NOT NULL,
  ended_at_ms INTEGER NOT NULL,
  client_address TEXT NOT NULL,
  client_port INTEGER NOT NULL,
  listener TEXT NOT NULL,
  username TEXT NOT NULL,
  account TEXT NOT NULL,
  outcome TEXT NOT NULL,
  token_source TEXT NOT NULL,
  bytes_client_to_upstream INTEGER NOT NULL,
  bytes_upstream_to_client INTEGER NOT NULL,
  close_reason TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX connection_log_by_end ON connection_log (ended_at_ms);
CREATE INDEX connection_log_by_account ON connection_log (account, ended_at_ms);
CREATE TRIGGER connection_log_no_update BEFORE UPDATE ON connection_log
BEGIN
  SELECT RAISE(ABORT, 'connection_log is append-only');
END;
CREATE TRIGGER connection_log_no_delete BEFORE DELETE ON connection_log
BEGIN
  SELECT RAISE(ABORT, 'connection_log is append-only');
END;
)sql",
    // v3: how each account is authorized (issue #6). Rows written before map to the default
    // profile ([oauth] + [upstream]) with no user action. tenant and client_id are per-account
    // overrides of the profile's (NULL: the profile's own). client_secret and
    // client_certificate (PEM certificate + private key) are the credentials of app-only
    // accounts, sealed like every secret. signed_in_as is who authorized a shared mailbox.
    R"sql(
ALTER TABLE mail_credentials ADD COLUMN provider TEXT NOT NULL DEFAULT 'default';
ALTER TABLE mail_credentials ADD COLUMN tenant TEXT;
ALTER TABLE mail_credentials ADD COLUMN client_id TEXT;
ALTER TABLE mail_credentials ADD COLUMN client_secret BLOB;
ALTER TABLE mail_credentials ADD COLUMN client_certificate BLOB;
ALTER TABLE mail_credentials ADD COLUMN signed_in_as TEXT;
)sql",
    // v4: the row MAC (issue #7): HMAC-SHA256, under a key derived from the master key, of every
    // column that decides where a secret goes or who may use it (credentials_store.cpp,
    // row_mac_input). Migrations run without the key, so existing rows get NULL here and
    // CredentialsStore::open fills them, once, in the transaction that also turns the sealed
    // key check into its v2 form; after that a NULL row_mac is a corrupt row.
    R"sql(
ALTER TABLE mail_credentials ADD COLUMN row_mac BLOB;
)sql",
    // v5: messages the upstream accepted in a submission session (issue #11); 0 for IMAP. Rows
    // before it hash as they did: the hash covers `messages` only when it is not 0
    // (audit_log.cpp, row_hash).
    R"sql(
ALTER TABLE connection_log ADD COLUMN messages INTEGER NOT NULL DEFAULT 0;
)sql",
    // v6: token and account events in the same chain (issue #8): `event` names one
    // (audit_log.hpp, AuditEvent), '' for a connection row. From v6 on rows are MAC'd under a
    // key derived from the master key (the v2 encoding covers every column); AuditLog::open keys
    // a log written before, leaving its plain-hashed rows in place behind a MAC'd boundary.
    R"sql(
ALTER TABLE connection_log ADD COLUMN event TEXT NOT NULL DEFAULT '';
CREATE INDEX connection_log_by_event ON connection_log (event) WHERE event <> '';
)sql",
};

Result<std::int64_t> query_int(Database& db, std::string_view sql) {
  IOP_TRY_ASSIGN(auto stmt, db.prepare(sql));
  IOP_TRY_ASSIGN(auto step, stmt.step());
  if (step != Statement::Step::row) {
    return fail(Errc::storage_unavailable, "database " + db.path() + ": no result for a query");
  }
  return stmt.column_int64(0);
}

// Creates the file with mode 0600 before SQLite does (it would use 0644 minus the umask):
// the file holds only ciphertexts, but also emails, hashes, account state and the connection
// log. SQLite gives the -wal and -shm files the same mode as the database.
void create_private_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
  }
  // Any error (already exists, no folder) is left for sqlite3_open_v2 to report.
}

// Per-connection settings. These are not stored in the file (except journal_mode), so they
// are set on every open.
Result<void> configure(Database& db, Durability durability) {
  // WAL lets readers (CLI commands, other proxies) run while the proxy writes.
  IOP_TRY_ASSIGN(auto mode, db.prepare("PRAGMA journal_mode=WAL"));
  IOP_TRY_ASSIGN(auto step, mode.step());
  std::string got = step == Statement::Step::row ? mode.column_text(0) : std::string();
  if (got != "wal") {
    return fail(Errc::storage_unavailable, "database " + db.path() +
                                               ": cannot use WAL journal mode (got '" + got +
                                               "'); put the database on a local file system");
  }
  // synchronous=FULL in WAL mode fsyncs the WAL on every commit: a refresh token the endpoint
  // just rotated (and so invalidated the old one) must not be lost by a power failure.
  // NORMAL is for writers whose last commits may be lost to a power failure (the audit log).
  IOP_TRY(db.exec(durability == Durability::full ? "PRAGMA synchronous=FULL;"
                                                 : "PRAGMA synchronous=NORMAL;"));
  IOP_TRY(db.exec("PRAGMA foreign_keys=ON;"));
  return {};
}

Result<void> migrate(Database& db) {
  constexpr auto known = static_cast<std::int64_t>(migrations.size());
  for (;;) {
    // BEGIN IMMEDIATE takes the write lock before we read the version, so two processes
    // opening a new database at once cannot both run the same step.
    IOP_TRY_ASSIGN(auto tx, Transaction::begin(db));
    IOP_TRY_ASSIGN(const std::int64_t version, query_int(db, "PRAGMA user_version"));
    if (version > known) {
      return fail(Errc::storage_unavailable,
                  "database " + db.path() + " has schema version " + std::to_string(version) +
                      ", newer than this program knows (" + std::to_string(known) +
                      "): it was written by a newer imap-oauth2-proxy; upgrade this one");
    }
    if (version < 0) {
      return fail(
          Errc::storage_unavailable,
          "database " + db.path() + " has an invalid schema version " + std::to_string(version));
    }
    if (version == known) {
      return tx.commit();
    }
    IOP_TRY(db.exec(std::string(migrations[static_cast<std::size_t>(version)])));
    // PRAGMA cannot take bound parameters; the value is our own integer.
    IOP_TRY(db.exec("PRAGMA user_version=" + std::to_string(version + 1)));
    IOP_TRY(tx.commit());
  }
}

}  // namespace

std::int64_t current_schema_version() { return static_cast<std::int64_t>(migrations.size()); }

Result<sqlite::Database> open_database(const std::filesystem::path& path, Durability durability) {
  create_private_file(path);
  IOP_TRY_ASSIGN(auto db, Database::open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  IOP_TRY(configure(db, durability));
  IOP_TRY(migrate(db));
  return db;
}

}  // namespace iop::storage

#undef IOP_TRY
