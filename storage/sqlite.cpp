#include "storage/sqlite.hpp"

#include <climits>

namespace iop::storage::sqlite {

namespace {

// "database <file>: <what>: <sqlite message>". SQLite's messages describe the failure (locked,
// disk full, constraint), never the bound values, so they are safe to show.
std::unexpected<Error> sqlite_error(sqlite3* db, std::string_view what) {
  const char* file = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
  std::string message = "database ";
  message += (file != nullptr && *file != '\0') ? file : "(unknown)";
  message += ": ";
  message += what;
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : "out of memory";
  return fail(Errc::storage_unavailable, std::move(message));
}

}  // namespace

Result<void> Statement::check_bind(int rc, int index) const {
  if (rc != SQLITE_OK) {
    return sqlite_error(db_, "binding parameter " + std::to_string(index));
  }
  return {};
}

Result<void> Statement::bind_text(int index, std::string_view value) {
  // SQLite takes int lengths; our values (tokens, emails, hashes) are far below 2 GiB.
  if (value.size() > static_cast<std::size_t>(INT_MAX)) {
    return fail(Errc::invalid_argument, "value too large for the database");
  }
  return check_bind(sqlite3_bind_text(stmt_.get(), index, value.data(),
                                      static_cast<int>(value.size()), SQLITE_TRANSIENT),
                    index);
}

Result<void> Statement::bind_blob(int index, std::string_view value) {
  if (value.size() > static_cast<std::size_t>(INT_MAX)) {
    return fail(Errc::invalid_argument, "value too large for the database");
  }
  // A zero-length blob with a null pointer would bind NULL; the data() of an empty view may be
  // null, so point at a static byte to keep "empty" distinct from NULL.
  static const char empty = 0;
  const char* data = value.empty() ? &empty : value.data();
  return check_bind(
      sqlite3_bind_blob(stmt_.get(), index, data, static_cast<int>(value.size()), SQLITE_TRANSIENT),
      index);
}

Result<void> Statement::bind_int64(int index, std::int64_t value) {
  return check_bind(sqlite3_bind_int64(stmt_.get(), index, value), index);
}

Result<void> Statement::bind_null(int index) {
  return check_bind(sqlite3_bind_null(stmt_.get(), index), index);
}

Result<Statement::Step> Statement::step() {
  int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) {
    return Step::row;
  }
  if (rc == SQLITE_DONE) {
    return Step::done;
  }
  auto error = sqlite_error(db_, "running statement");
  // Leave the statement reusable; with prepare_v2 the error is already in sqlite3_errmsg.
  sqlite3_reset(stmt_.get());
  return error;
}

bool Statement::column_is_null(int col) const {
  return sqlite3_column_type(stmt_.get(), col) == SQLITE_NULL;
}

std::int64_t Statement::column_int64(int col) const {
  return sqlite3_column_int64(stmt_.get(), col);
}

std::string Statement::column_text(int col) const {
  const unsigned char* text = sqlite3_column_text(stmt_.get(), col);
  // column_bytes after column_text gives the length of the UTF-8 form just produced.
  int size = sqlite3_column_bytes(stmt_.get(), col);
  if (text == nullptr || size <= 0) {
    return {};
  }
  return {reinterpret_cast<const char*>(text), static_cast<std::size_t>(size)};
}

std::string Statement::column_blob(int col) const {
  const void* data = sqlite3_column_blob(stmt_.get(), col);
  int size = sqlite3_column_bytes(stmt_.get(), col);
  if (data == nullptr || size <= 0) {
    return {};
  }
  return {static_cast<const char*>(data), static_cast<std::size_t>(size)};
}

void Statement::reset() {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
}

Result<Database> Database::open(const std::filesystem::path& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  // open_v2 returns a handle even on failure (except out of memory); it must still be closed.
  std::unique_ptr<sqlite3, Closer> db(raw);
  if (rc != SQLITE_OK) {
    std::string message = "cannot open database " + path.string() + ": ";
    message += raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    return fail(Errc::storage_unavailable, std::move(message));
  }
  // Another connection (a CLI command, a second proxy) may hold the write lock for a moment.
  if (sqlite3_busy_timeout(db.get(), 5000) != SQLITE_OK) {
    return sqlite_error(db.get(), "setting the busy timeout");
  }
  return Database(std::move(db), path.string());
}

Result<void> Database::exec(const std::string& sql) {
  char* message = nullptr;
  int rc = sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    std::string text =
        "database " + path_ + ": " + (message != nullptr ? message : sqlite3_errstr(rc));
    sqlite3_free(message);
    return fail(Errc::storage_unavailable, std::move(text));
  }
  return {};
}

Result<Statement> Database::prepare(std::string_view sql) {
  if (sql.size() > static_cast<std::size_t>(INT_MAX)) {
    return fail(Errc::invalid_argument, "SQL text too large");
  }
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_.get(), sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return sqlite_error(db_.get(), "preparing statement");
  }
  return Statement(db_.get(), stmt);
}

std::int64_t Database::changes() const { return sqlite3_changes64(db_.get()); }

Result<Transaction> Transaction::begin(Database& db, const std::string& begin) {
  IOP_TRY(db.exec(begin));
  return Transaction(&db);
}

Transaction::~Transaction() {
  if (db_ != nullptr) {
    // Best effort: if ROLLBACK itself fails, SQLite has already rolled back (for example after
    // an I/O error), and closing the connection would roll back anyway.
    (void)db_->exec("ROLLBACK");
  }
}

Result<void> Transaction::commit() {
  Database* db = std::exchange(db_, nullptr);
  if (auto rc = db->exec("COMMIT"); !rc) {
    // A failed COMMIT (SQLITE_BUSY) leaves the transaction open; end it so the connection is
    // usable again.
    (void)db->exec("ROLLBACK");
    return rc;
  }
  return {};
}

}  // namespace iop::storage::sqlite
