#pragma once
// The connection_log table (and its marks and the key check in meta) on one database engine:
// SQLite, where each machine keeps its own log, or PostgreSQL, where every proxy instance
// appends to one chain (issue #10). Only rows and transactions: the chain (hashes, MACs, marks),
// verification and retention live in audit_log.cpp, once for both engines.
//
// Internal to storage/. Not thread-safe: AuditLog serializes calls with its mutex.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/audit_log.hpp"
#include "storage/key_check.hpp"
#include "storage/sealed.hpp"

namespace iop::storage {

// A row as stored: the enums as their text, exactly what the hash covers. verify() hashes the
// stored text, so a value this version does not know still verifies (or fails) by its bytes.
struct LogRow {
  std::int64_t id = 0;
  std::int64_t started_at_ms = 0;
  std::int64_t ended_at_ms = 0;
  std::string client_address;
  std::int64_t client_port = 0;
  std::string listener;
  std::string username;
  std::string account;
  std::string outcome;
  std::string token_source;
  std::int64_t bytes_client_to_upstream = 0;
  std::int64_t bytes_upstream_to_client = 0;
  std::string close_reason;
  std::string prev_hash;
  std::string hash;
  std::int64_t messages = 0;
  std::string event;
};

// A transaction, rolled back when destroyed without commit().
class LogTransaction {
 public:
  virtual ~LogTransaction() = default;
  virtual Result<void> commit() = 0;
};

class LogRows {
 public:
  virtual ~LogRows() = default;

  // Names the database in messages: "database /var/lib/.../credentials.db", "PostgreSQL
  // postgresql://iop@db/mail" (never a password).
  [[nodiscard]] virtual const std::string& where() const = 0;

  // A write transaction during which no other writer (thread, process or proxy instance) appends
  // or prunes: SQLite takes the file's write lock (BEGIN IMMEDIATE); PostgreSQL a transaction
  // advisory lock on the chain. Appends from every instance thus form one chain.
  virtual Result<std::unique_ptr<LogTransaction>> begin_append() = 0;
  // A read-only transaction on one snapshot: the marks and the rows agree while others append.
  virtual Result<std::unique_ptr<LogTransaction>> begin_snapshot() = 0;

  // A meta value as bytes; nullopt when there is none.
  virtual Result<std::optional<std::string>> read_meta(std::string_view key) = 0;
  virtual Result<void> write_meta(std::string_view key, std::string_view value) = 0;
  virtual Result<void> delete_meta(std::string_view key) = 0;
  // The sealed key check (storage/key_check.hpp). On PostgreSQL inside a transaction it also
  // serializes with instances opening a new database (the credentials store takes the same
  // lock).
  virtual Result<KeyCheck> read_key_check(const MasterKey& key) = 0;
  virtual Result<void> write_key_check(const MasterKey& key, KeyCheck version) = 0;

  virtual Result<std::int64_t> count() = 0;
  virtual Result<std::int64_t> max_id() = 0;  // 0 for an empty table
  virtual Result<std::int64_t> min_id() = 0;  // 0 for an empty table
  virtual Result<std::optional<LogRow>> row(std::int64_t id) = 0;
  virtual Result<void> insert(const LogRow& row) = 0;
  // Calls `visit` with every row, by id, until it returns false. Memory stays bounded however
  // long the log is.
  virtual Result<void> scan(const std::function<Result<bool>(const LogRow&)>& visit) = 0;
  // The rows matching `filter` (AuditQuery), NEWEST first (the limit keeps the newest).
  virtual Result<std::vector<LogRow>> select(const AuditQuery& filter) = 0;
  // AuditLog::summarize's rows, status as stored (empty when the account has no row).
  virtual Result<std::vector<AccountActivity>> summarize(std::optional<std::int64_t> since_ms) = 0;
  // Inside begin_append(): deletes the rows with id <= `last`, past the append-only trigger,
  // which is back in force when this returns (retention).
  virtual Result<void> delete_through(std::int64_t last) = 0;
};

// The SQLite file at `path` (created, migrated), with synchronous=NORMAL (audit_log.hpp).
Result<std::unique_ptr<LogRows>> open_sqlite_log_rows(const std::filesystem::path& path);

// The PostgreSQL database at `url` (storage/postgres.hpp), migrated (`read_only`: not migrated,
// and refused unless its schema is current), on a connection of its own that reconnects by
// itself after a restart. `password`: empty for PGPASSFILE.
Result<std::unique_ptr<LogRows>> open_pg_log_rows(std::string_view url, const Secret& password,
                                                  bool read_only = false);

// The statement both engines run for select(): fixed fragments only, every value a parameter
// numbered from 1 in `params` order. `placeholder` is '?' (SQLite) or '$' (PostgreSQL).
struct LogQuery {
  std::string sql;
  struct Value {
    std::optional<std::int64_t> integer;  // else `text`
    std::string text;
  };
  std::vector<Value> params;
};
LogQuery log_select_sql(const AuditQuery& filter, char placeholder);

// The statement both engines run for summarize(): one parameter, the cut-off (ms).
std::string log_summary_sql(char placeholder);

// The columns select() and scan() read, in LogRow order, and the statement that inserts them.
extern const std::string_view log_columns;
std::string log_insert_sql(char placeholder);

}  // namespace iop::storage
