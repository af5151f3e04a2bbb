#pragma once
// A small RAII layer over the SQLite C API. This is the only file that includes <sqlite3.h>
// (STYLE 3.6); everything else in storage/ talks to SQLite through Database and Statement.
//
// Errors are Errc::storage_unavailable carrying SQLite's message and the database file name.
// Neither class is thread-safe: the owner serializes access (the credentials store holds a mutex).

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.hpp"

namespace iop::storage::sqlite {

// A prepared statement. Parameter and column indexes follow SQLite: parameters from 1
// (`?1`, `?2`, ...), columns from 0.
class Statement {
 public:
  enum class Step { row, done };

  // Bind by value: the bytes are copied (SQLITE_TRANSIENT), so the arguments may die at once.
  Result<void> bind_text(int index, std::string_view value);
  Result<void> bind_blob(int index, std::string_view value);
  Result<void> bind_int64(int index, std::int64_t value);
  Result<void> bind_null(int index);

  // Runs one step: Step::row when a result row is ready for the column getters, Step::done when
  // the statement finished. A busy database is retried by SQLite up to the busy timeout first.
  Result<Step> step();

  // Column getters for the current row. NULL reads as 0 or as an empty string.
  [[nodiscard]] bool column_is_null(int col) const;
  [[nodiscard]] std::int64_t column_int64(int col) const;
  [[nodiscard]] std::string column_text(int col) const;
  [[nodiscard]] std::string column_blob(int col) const;

  // Makes the statement ready to run again and clears its bindings.
  void reset();

 private:
  friend class Database;
  struct Finalizer {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
  };
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Result<void> check_bind(int rc, int index) const;

  sqlite3* db_;  // not owned: the Database outlives its statements
  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
};

// One connection.
class Database {
 public:
  // Opens `path` with sqlite3_open_v2 `flags` (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, ...)
  // and sets a 5000 ms busy timeout, so another process holding the write lock briefly makes us
  // wait instead of failing.
  static Result<Database> open(const std::filesystem::path& path, int flags);

  // Runs `sql`, which may hold several statements and must not need parameters (pragmas,
  // schema, BEGIN/COMMIT). Rows produced are discarded.
  Result<void> exec(const std::string& sql);

  // Prepares one statement. Statements must be destroyed before this Database.
  Result<Statement> prepare(std::string_view sql);

  // Rows changed by the most recent INSERT, UPDATE or DELETE on this connection.
  [[nodiscard]] std::int64_t changes() const;

  // The file name, for messages.
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  Database(std::unique_ptr<sqlite3, Closer> db, std::string path)
      : db_(std::move(db)), path_(std::move(path)) {}

  std::unique_ptr<sqlite3, Closer> db_;
  std::string path_;
};

// A transaction that rolls back unless commit() succeeded. `begin` is the statement that
// starts it; use "BEGIN IMMEDIATE" for read-modify-write, so the write lock is taken up front
// and a concurrent writer cannot slip in between our read and our write.
class Transaction {
 public:
  static Result<Transaction> begin(Database& db, const std::string& begin = "BEGIN IMMEDIATE");
  Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  Result<void> commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;  // null once committed or rolled back
};

}  // namespace iop::storage::sqlite
