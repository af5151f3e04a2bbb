// connection_log on SQLite (storage/log_rows.hpp).

#include <utility>

#include "storage/database.hpp"
#include "storage/log_rows.hpp"
#include "storage/sqlite.hpp"

namespace iop::storage {

namespace {

using sqlite::Database;
using sqlite::Statement;

LogRow read_row(const Statement& stmt) {
  LogRow r;
  r.id = stmt.column_int64(0);
  r.started_at_ms = stmt.column_int64(1);
  r.ended_at_ms = stmt.column_int64(2);
  r.client_address = stmt.column_text(3);
  r.client_port = stmt.column_int64(4);
  r.listener = stmt.column_text(5);
  r.username = stmt.column_text(6);
  r.account = stmt.column_text(7);
  r.outcome = stmt.column_text(8);
  r.token_source = stmt.column_text(9);
  r.bytes_client_to_upstream = stmt.column_int64(10);
  r.bytes_upstream_to_client = stmt.column_int64(11);
  r.close_reason = stmt.column_text(12);
  r.prev_hash = stmt.column_text(13);
  r.hash = stmt.column_text(14);
  r.messages = stmt.column_int64(15);
  r.event = stmt.column_text(16);
  return r;
}

// The append-only trigger on DELETE (schema v2), dropped and re-created around delete_through()
// in the same transaction.
constexpr std::string_view no_delete_trigger = R"sql(
CREATE TRIGGER connection_log_no_delete BEFORE DELETE ON connection_log
BEGIN
  SELECT RAISE(ABORT, 'connection_log is append-only');
END;
)sql";

class SqliteTransaction final : public LogTransaction {
 public:
  explicit SqliteTransaction(sqlite::Transaction tx) : tx_(std::move(tx)) {}
  Result<void> commit() override { return tx_.commit(); }

 private:
  sqlite::Transaction tx_;
};

class SqliteLogRows final : public LogRows {
 public:
  explicit SqliteLogRows(Database db) : db_(std::move(db)), where_("database " + db_.path()) {}

  [[nodiscard]] const std::string& where() const override { return where_; }

  Result<std::unique_ptr<LogTransaction>> begin_append() override {
    IOP_TRY_ASSIGN(auto tx, sqlite::Transaction::begin(db_));  // IMMEDIATE: the write lock
    return std::make_unique<SqliteTransaction>(std::move(tx));
  }

  Result<std::unique_ptr<LogTransaction>> begin_snapshot() override {
    // WAL readers do not block the writer.
    IOP_TRY_ASSIGN(auto tx, sqlite::Transaction::begin(db_, "BEGIN DEFERRED"));
    return std::make_unique<SqliteTransaction>(std::move(tx));
  }

  Result<std::optional<std::string>> read_meta(std::string_view key) override {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare("SELECT value FROM meta WHERE key = ?1"));
    IOP_TRY(stmt.bind_text(1, key));
    IOP_TRY_ASSIGN(auto step, stmt.step());
    if (step != Statement::Step::row) {
      return std::optional<std::string>();
    }
    // The value column has BLOB affinity; read it as bytes whatever was stored.
    return std::optional<std::string>(std::string(stmt.column_blob(0)));
  }

  Result<void> write_meta(std::string_view key, std::string_view value) override {
    IOP_TRY_ASSIGN(auto stmt,
                   db_.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) "
                               "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
    IOP_TRY(stmt.bind_text(1, key));
    IOP_TRY(stmt.bind_text(2, value));
    IOP_TRY(stmt.step());
    return {};
  }

  Result<void> delete_meta(std::string_view key) override {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare("DELETE FROM meta WHERE key = ?1"));
    IOP_TRY(stmt.bind_text(1, key));
    IOP_TRY(stmt.step());
    return {};
  }

  Result<KeyCheck> read_key_check(const MasterKey& key) override {
    return storage::read_key_check(db_, key);
  }

  Result<void> write_key_check(const MasterKey& key, KeyCheck version) override {
    return storage::write_key_check(db_, key, version);
  }

  Result<std::int64_t> count() override { return single("SELECT count(*) FROM connection_log"); }
  Result<std::int64_t> max_id() override { return single("SELECT max(id) FROM connection_log"); }
  Result<std::int64_t> min_id() override { return single("SELECT min(id) FROM connection_log"); }

  Result<std::optional<LogRow>> row(std::int64_t id) override {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare("SELECT " + std::string(log_columns) +
                                          " FROM connection_log WHERE id = ?1"));
    IOP_TRY(stmt.bind_int64(1, id));
    IOP_TRY_ASSIGN(auto step, stmt.step());
    if (step != Statement::Step::row) {
      return std::optional<LogRow>();
    }
    return std::optional<LogRow>(read_row(stmt));
  }

  Result<void> insert(const LogRow& row) override {
    if (!insert_) {
      IOP_TRY_ASSIGN(auto stmt, db_.prepare(log_insert_sql('?')));
      insert_.emplace(std::move(stmt));
    }
    Statement& insert = *insert_;
    insert.reset();
    IOP_TRY(insert.bind_int64(1, row.id));
    IOP_TRY(insert.bind_int64(2, row.started_at_ms));
    IOP_TRY(insert.bind_int64(3, row.ended_at_ms));
    IOP_TRY(insert.bind_text(4, row.client_address));
    IOP_TRY(insert.bind_int64(5, row.client_port));
    IOP_TRY(insert.bind_text(6, row.listener));
    IOP_TRY(insert.bind_text(7, row.username));
    IOP_TRY(insert.bind_text(8, row.account));
    IOP_TRY(insert.bind_text(9, row.outcome));
    IOP_TRY(insert.bind_text(10, row.token_source));
    IOP_TRY(insert.bind_int64(11, row.bytes_client_to_upstream));
    IOP_TRY(insert.bind_int64(12, row.bytes_upstream_to_client));
    IOP_TRY(insert.bind_text(13, row.close_reason));
    IOP_TRY(insert.bind_text(14, row.prev_hash));
    IOP_TRY(insert.bind_text(15, row.hash));
    IOP_TRY(insert.bind_int64(16, row.messages));
    IOP_TRY(insert.bind_text(17, row.event));
    IOP_TRY(insert.step());
    insert.reset();
    return {};
  }

  Result<void> scan(const std::function<Result<bool>(const LogRow&)>& visit) override {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare("SELECT " + std::string(log_columns) +
                                          " FROM connection_log ORDER BY id"));
    for (;;) {
      IOP_TRY_ASSIGN(auto step, stmt.step());
      if (step == Statement::Step::done) {
        return {};
      }
      IOP_TRY_ASSIGN(const bool more, visit(read_row(stmt)));
      if (!more) {
        stmt.reset();
        return {};
      }
    }
  }

  Result<std::vector<LogRow>> select(const AuditQuery& filter) override {
    const LogQuery q = log_select_sql(filter, '?');
    IOP_TRY_ASSIGN(auto stmt, db_.prepare(q.sql));
    for (std::size_t i = 0; i < q.params.size(); ++i) {
      const int index = static_cast<int>(i) + 1;
      if (q.params[i].integer) {
        IOP_TRY(stmt.bind_int64(index, *q.params[i].integer));
      } else {
        IOP_TRY(stmt.bind_text(index, q.params[i].text));
      }
    }
    std::vector<LogRow> out;
    for (;;) {
      IOP_TRY_ASSIGN(auto step, stmt.step());
      if (step == Statement::Step::done) {
        return out;
      }
      out.push_back(read_row(stmt));
    }
  }

  Result<std::vector<AccountActivity>> summarize(std::optional<std::int64_t> since_ms) override {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare(log_summary_sql('?')));
    IOP_TRY(stmt.bind_int64(1, since_ms.value_or(std::numeric_limits<std::int64_t>::min())));
    std::vector<AccountActivity> out;
    for (;;) {
      IOP_TRY_ASSIGN(auto step, stmt.step());
      if (step == Statement::Step::done) {
        return out;
      }
      AccountActivity a;
      a.account = stmt.column_text(0);
      a.connections = stmt.column_int64(1);
      a.failures = stmt.column_int64(2);
      a.bytes_client_to_upstream = stmt.column_int64(3);
      a.bytes_upstream_to_client = stmt.column_int64(4);
      a.distinct_clients = stmt.column_int64(5);
      a.last_seen_ms = stmt.column_int64(6);
      a.last_refresh_ms = stmt.column_int64(7);  // NULL reads as 0
      a.status = stmt.column_text(8);
      out.push_back(std::move(a));
    }
  }

  Result<void> delete_through(std::int64_t last) override {
    IOP_TRY(db_.exec("DROP TRIGGER IF EXISTS connection_log_no_delete"));
    IOP_TRY_ASSIGN(auto del, db_.prepare("DELETE FROM connection_log WHERE id <= ?1"));
    IOP_TRY(del.bind_int64(1, last));
    IOP_TRY(del.step());
    IOP_TRY(db_.exec(std::string(no_delete_trigger)));
    return {};
  }

 private:
  Result<std::int64_t> single(std::string_view sql) {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare(sql));
    IOP_TRY_ASSIGN(auto step, stmt.step());
    return step == Statement::Step::row ? stmt.column_int64(0) : 0;  // NULL reads as 0
  }

  Database db_;
  std::string where_;
  std::optional<Statement> insert_;  // prepared once: a batch inserts many rows
};

}  // namespace

Result<std::unique_ptr<LogRows>> open_sqlite_log_rows(const std::filesystem::path& path) {
  // NORMAL, not FULL: one fsync per batch would be the writer thread's main cost, and a power
  // failure can only drop the newest rows together with their head (audit_log.hpp).
  IOP_TRY_ASSIGN(auto db, open_database(path, Durability::normal));
  return std::unique_ptr<LogRows>(std::make_unique<SqliteLogRows>(std::move(db)));
}

}  // namespace iop::storage
