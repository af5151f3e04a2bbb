#pragma once
// The mail_credentials table (and the key check in meta) on one database engine: SQLite, the
// embedded default, or PostgreSQL (issue #10). Only rows and transactions: sealing, the row MAC
// and every rule about which write is allowed live in credentials_store.cpp, once for both
// engines, so the two cannot drift apart in what they accept.
//
// Internal to storage/. Not thread-safe: CredentialsStore serializes calls with its mutex.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/credentials_store.hpp"
#include "storage/key_check.hpp"
#include "storage/sealed.hpp"

namespace iop::storage {

// One row of mail_credentials as the program reads it: secrets still sealed, NULL read as an
// empty string or 0 (the store writes every absent value as NULL, and reads NULL and '' alike).
struct StoredRow {
  std::string email;
  bool use_oauth = true;
  std::string access_token;   // sealed; empty: NULL
  std::string refresh_token;  // sealed
  std::int64_t token_expiry = 0;
  std::int64_t refreshed_at_ms = 0;
  std::string password;  // sealed
  std::string local_password_hash;
  std::string upstream_host;
  std::int64_t upstream_port = 0;
  std::string status = "active";
  std::string status_reason;
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
  std::string provider = "default";
  std::string tenant;
  std::string client_id;
  std::string client_secret;       // sealed
  std::string client_certificate;  // sealed
  std::string signed_in_as;
  std::optional<std::string> row_mac;  // nullopt: NULL
};

// A write transaction, rolled back when destroyed without commit().
class RowsTransaction {
 public:
  virtual ~RowsTransaction() = default;
  virtual Result<void> commit() = 0;
};

class CredentialRows {
 public:
  virtual ~CredentialRows() = default;

  // Starts a write transaction. From a load_row(email, true) in it to its end, no other writer
  // (thread, process or proxy instance) can change that row: SQLite takes the database's write
  // lock at BEGIN IMMEDIATE; PostgreSQL locks the row (SELECT ... FOR UPDATE).
  virtual Result<std::unique_ptr<RowsTransaction>> begin_write() = 0;

  // The row of `email`, or nullopt. `for_update`: inside a write transaction, locked until it
  // ends.
  virtual Result<std::optional<StoredRow>> load_row(std::string_view email, bool for_update) = 0;
  // Every row, by email.
  virtual Result<std::vector<StoredRow>> load_rows() = 0;
  // Every column of `row`: UPDATE when `exists`, else INSERT. Exactly one row changes, or
  // Errc::internal.
  virtual Result<void> write_row(const StoredRow& row, bool exists) = 0;
  virtual Result<void> set_row_mac(std::string_view email, std::string_view mac) = 0;
  // Deletes the row; false when there was none.
  virtual Result<bool> remove(std::string_view email) = 0;

  // The sealed key check (storage/key_check.hpp). Inside a write transaction; on PostgreSQL,
  // read_key_check also serializes instances opening a new database at once.
  virtual Result<KeyCheck> read_key_check(const MasterKey& key) = 0;
  virtual Result<void> write_key_check(const MasterKey& key, KeyCheck version) = 0;

  // Whether load_row(email, false) may be called from any thread without the store's mutex, even
  // while another thread holds a write transaction (it then reads what is committed, on a
  // connection of its own). PostgreSQL: yes, from a pool; SQLite: no, one connection. (load_rows
  // stays under the mutex on both.)
  [[nodiscard]] virtual bool concurrent_reads() const = 0;

  // After a failed load_row(email, false) on this thread: false when it failed for want of a
  // server (none reachable, or the connection was lost), true when the server answered with the
  // error. That call's own outcome, whatever other threads meet meanwhile.
  [[nodiscard]] virtual bool connected() const = 0;

  // CredentialsStore::try_refresh_lock. Thread-safe on its own (called without the store's
  // mutex).
  virtual Result<RefreshLockAttempt> try_refresh_lock(std::string_view email) = 0;
};

// The SQLite file at `path`, opened (created, migrated) with synchronous=FULL.
Result<std::unique_ptr<CredentialRows>> open_sqlite_rows(const std::filesystem::path& path);

// The PostgreSQL database at `url` (storage/postgres.hpp), migrated; reconnects by itself when
// the server restarted. `password`: empty for PGPASSFILE or a server that needs none.
Result<std::unique_ptr<CredentialRows>> open_pg_rows(std::string_view url, Secret password);

}  // namespace iop::storage
