#include "storage/pg_database.hpp"

#include <array>
#include <string>
#include <string_view>

namespace iop::storage {

namespace {

using pg::Connection;
using pg::Param;
using pg::Transaction;

// Schema history, step for step the same as storage/database.cpp's SQLite migrations (see the
// comments there for why each column exists). Append new steps to both lists; never edit a
// released one.
constexpr std::array<std::string_view, 6> migrations = {
    R"sql(
CREATE TABLE mail_credentials (
  email TEXT PRIMARY KEY,
  use_oauth BIGINT NOT NULL,
  access_token BYTEA,
  refresh_token BYTEA,
  token_expiry BIGINT NOT NULL DEFAULT 0,
  refreshed_at_ms BIGINT NOT NULL DEFAULT 0,
  password BYTEA,
  local_password_hash TEXT,
  upstream_host TEXT,
  upstream_port BIGINT NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth')),
  status_reason TEXT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value BYTEA
);
)sql",
    // v2: the connection log. A trigger function stands for SQLite's RAISE(ABORT) triggers.
    R"sql(
CREATE TABLE connection_log (
  id BIGINT PRIMARY KEY,
  started_at_ms BIGINT NOT NULL,
  ended_at_ms BIGINT NOT NULL,
  client_address TEXT NOT NULL,
  client_port BIGINT NOT NULL,
  listener TEXT NOT NULL,
  username TEXT NOT NULL,
  account TEXT NOT NULL,
  outcome TEXT NOT NULL,
  token_source TEXT NOT NULL,
  bytes_client_to_upstream BIGINT NOT NULL,
  bytes_upstream_to_client BIGINT NOT NULL,
  close_reason TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX connection_log_by_end ON connection_log (ended_at_ms);
CREATE INDEX connection_log_by_account ON connection_log (account, ended_at_ms);
CREATE FUNCTION connection_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'connection_log is append-only';
END
$$;
CREATE TRIGGER connection_log_no_update BEFORE UPDATE ON connection_log
  FOR EACH ROW EXECUTE FUNCTION connection_log_append_only();
CREATE TRIGGER connection_log_no_delete BEFORE DELETE ON connection_log
  FOR EACH ROW EXECUTE FUNCTION connection_log_append_only();
)sql",
    // v3: how each account is authorized (issue #6).
    R"sql(
ALTER TABLE mail_credentials ADD COLUMN provider TEXT NOT NULL DEFAULT 'default';
ALTER TABLE mail_credentials ADD COLUMN tenant TEXT;
ALTER TABLE mail_credentials ADD COLUMN client_id TEXT;
ALTER TABLE mail_credentials ADD COLUMN client_secret BYTEA;
ALTER TABLE mail_credentials ADD COLUMN client_certificate BYTEA;
ALTER TABLE mail_credentials ADD COLUMN signed_in_as TEXT;
)sql",
    // v4: the row MAC (issue #7).
    R"sql(
ALTER TABLE mail_credentials ADD COLUMN row_mac BYTEA;
)sql",
    // v5: messages accepted in a submission session (issue #11).
    R"sql(
ALTER TABLE connection_log ADD COLUMN messages BIGINT NOT NULL DEFAULT 0;
)sql",
    // v6: token and account events in the chain (issue #8).
    R"sql(
ALTER TABLE connection_log ADD COLUMN event TEXT NOT NULL DEFAULT '';
CREATE INDEX connection_log_by_event ON connection_log (event) WHERE event <> '';
)sql",
};

// The advisory lock every migration step takes (pg_advisory_xact_lock: released at the end of
// the step's transaction). Any 64-bit number unique to this program in the database: the
// ASCII of "iop-schm".
constexpr std::int64_t migration_lock = 0x696f702d7363686d;

// The one-row table that records the schema version (PostgreSQL has no PRAGMA user_version).
constexpr std::string_view version_table = R"sql(
CREATE TABLE IF NOT EXISTS iop_schema_version (
  one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
  version BIGINT NOT NULL
);
INSERT INTO iop_schema_version (version) VALUES (0) ON CONFLICT DO NOTHING;
)sql";

Result<void> migrate(Connection& conn) {
  constexpr auto known = static_cast<std::int64_t>(migrations.size());
  for (;;) {
    IOP_TRY_ASSIGN(auto tx, Transaction::begin(conn));
    // Taken before the version is read: a second instance waits here until the first has
    // committed its step, then reads the new version.
    IOP_TRY(conn.exec("SELECT pg_advisory_xact_lock($1)", {Param::integer(migration_lock)}));
    IOP_TRY(conn.run(version_table));
    IOP_TRY_ASSIGN(const auto rows, conn.exec("SELECT version FROM iop_schema_version"));
    const std::int64_t version = rows.size() == 1 ? rows.integer(0, 0) : -1;
    if (version > known) {
      return fail(Errc::storage_unavailable,
                  "PostgreSQL " + conn.shown() + " has schema version " + std::to_string(version) +
                      ", newer than this program knows (" + std::to_string(known) +
                      "): it was written by a newer imap-oauth2-proxy; upgrade this one");
    }
    if (version < 0) {
      return fail(Errc::storage_unavailable, "PostgreSQL " + conn.shown() +
                                                 " has an invalid schema version " +
                                                 std::to_string(version));
    }
    if (version == known) {
      return tx.commit();
    }
    IOP_TRY(conn.run(migrations[static_cast<std::size_t>(version)]));
    IOP_TRY(conn.exec("UPDATE iop_schema_version SET version = $1", {Param::integer(version + 1)}));
    IOP_TRY(tx.commit());
  }
}

}  // namespace

std::int64_t pg_schema_steps() { return static_cast<std::int64_t>(migrations.size()); }

Result<pg::Connection> open_pg_database(const pg::Target& target, const Secret& password) {
  IOP_TRY_ASSIGN(auto conn, Connection::open(target, password));
  IOP_TRY(migrate(conn));
  return conn;
}

Result<pg::Connection> open_pg_database_for_reading(const pg::Target& target,
                                                    const Secret& password) {
  IOP_TRY_ASSIGN(auto conn, Connection::open(target, password));
  IOP_TRY_ASSIGN(const std::int64_t version, pg_schema_version(conn));
  if (version == 0) {
    return fail(Errc::storage_unavailable,
                "PostgreSQL " + target.shown +
                    " holds no imap-oauth2-proxy tables: is this the database serve uses? "
                    "(serve or 'account add' creates them)");
  }
  if (version != pg_schema_steps()) {
    return fail(Errc::storage_unavailable,
                "PostgreSQL " + target.shown + " has schema version " + std::to_string(version) +
                    ", this program reads version " + std::to_string(pg_schema_steps()) +
                    (version < pg_schema_steps()
                         ? ": start serve of this version once (it migrates), then read"
                         : ": upgrade imap-oauth2-proxy"));
  }
  return conn;
}

Result<std::int64_t> pg_schema_version(pg::Connection& conn) {
  IOP_TRY_ASSIGN(const auto exists,
                 conn.exec("SELECT to_regclass('iop_schema_version') IS NOT NULL"));
  if (exists.size() != 1 || exists.text(0, 0) != "t") {
    return 0;
  }
  IOP_TRY_ASSIGN(const auto rows, conn.exec("SELECT version FROM iop_schema_version"));
  return rows.size() == 1 ? rows.integer(0, 0) : 0;
}

}  // namespace iop::storage
