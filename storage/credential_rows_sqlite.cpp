// mail_credentials on SQLite (storage/credential_rows.hpp).

#include <utility>

#include "storage/credential_rows.hpp"
#include "storage/database.hpp"
#include "storage/sqlite.hpp"

namespace iop::storage {

namespace {

using sqlite::Database;
using sqlite::Statement;
using sqlite::Transaction;

// Every column, in the order read_row expects.
constexpr std::string_view select_rows =
    "SELECT email, use_oauth, access_token, refresh_token, token_expiry, refreshed_at_ms, "
    "password, local_password_hash, upstream_host, upstream_port, status, status_reason, "
    "created_at, updated_at, provider, tenant, client_id, client_secret, client_certificate, "
    "signed_in_as, row_mac FROM mail_credentials";

StoredRow read_row(const Statement& stmt) {
  StoredRow r;
  r.email = stmt.column_text(0);
  r.use_oauth = stmt.column_int64(1) != 0;
  r.access_token = stmt.column_blob(2);
  r.refresh_token = stmt.column_blob(3);
  r.token_expiry = stmt.column_int64(4);
  r.refreshed_at_ms = stmt.column_int64(5);
  r.password = stmt.column_blob(6);
  r.local_password_hash = stmt.column_text(7);
  r.upstream_host = stmt.column_text(8);
  r.upstream_port = stmt.column_int64(9);
  r.status = stmt.column_text(10);
  r.status_reason = stmt.column_text(11);
  r.created_at = stmt.column_int64(12);
  r.updated_at = stmt.column_int64(13);
  r.provider = stmt.column_text(14);
  r.tenant = stmt.column_text(15);
  r.client_id = stmt.column_text(16);
  r.client_secret = stmt.column_blob(17);
  r.client_certificate = stmt.column_blob(18);
  r.signed_in_as = stmt.column_text(19);
  if (!stmt.column_is_null(20)) {
    r.row_mac = stmt.column_blob(20);
  }
  return r;
}

class SqliteTransaction final : public RowsTransaction {
 public:
  explicit SqliteTransaction(Transaction tx) : tx_(std::move(tx)) {}
  Result<void> commit() override { return tx_.commit(); }

 private:
  Transaction tx_;
};

class SqliteRows final : public CredentialRows {
 public:
  explicit SqliteRows(Database db) : db_(std::move(db)) {}
  ~SqliteRows() override { by_email_.reset(); }  // statements before their database

  Result<std::unique_ptr<RowsTransaction>> begin_write() override {
    // IMMEDIATE: the write lock is held from the read to the write, so another process cannot
    // commit in between.
    IOP_TRY_ASSIGN(auto tx, Transaction::begin(db_));
    return std::make_unique<SqliteTransaction>(std::move(tx));
  }

  Result<std::optional<StoredRow>> load_row(std::string_view email, bool /*for_update*/) override {
    // Prepared once: every login reads its account, and preparing this statement took longer
    // (0.15 ms) than running it.
    if (!by_email_) {
      IOP_TRY_ASSIGN(auto stmt, db_.prepare(std::string(select_rows) + " WHERE email = ?1"));
      by_email_.emplace(std::move(stmt));
    }
    Statement& stmt = *by_email_;
    // Reset on every path: a statement left on its row would hold its read transaction open.
    struct Reset {
      Statement& stmt;
      ~Reset() { stmt.reset(); }
    } reset{stmt};
    IOP_TRY(stmt.bind_text(1, email));
    IOP_TRY_ASSIGN(auto step, stmt.step());
    if (step != Statement::Step::row) {
      return std::nullopt;
    }
    return read_row(stmt);
  }

  Result<std::vector<StoredRow>> load_rows() override {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare(std::string(select_rows) + " ORDER BY email"));
    std::vector<StoredRow> rows;
    for (;;) {
      IOP_TRY_ASSIGN(auto step, stmt.step());
      if (step == Statement::Step::done) {
        return rows;
      }
      rows.push_back(read_row(stmt));
    }
  }

  Result<void> write_row(const StoredRow& row, bool exists) override {
    const char* const sql =
        exists ? "UPDATE mail_credentials SET use_oauth = ?2, access_token = ?3, "
                 "refresh_token = ?4, token_expiry = ?5, refreshed_at_ms = ?6, password = ?7, "
                 "local_password_hash = ?8, upstream_host = ?9, upstream_port = ?10, "
                 "status = ?11, status_reason = ?12, created_at = ?13, updated_at = ?14, "
                 "provider = ?15, tenant = ?16, client_id = ?17, client_secret = ?18, "
                 "client_certificate = ?19, signed_in_as = ?20, row_mac = ?21 WHERE email = ?1"
               : "INSERT INTO mail_credentials (email, use_oauth, access_token, refresh_token, "
                 "token_expiry, refreshed_at_ms, password, local_password_hash, upstream_host, "
                 "upstream_port, status, status_reason, created_at, updated_at, provider, tenant, "
                 "client_id, client_secret, client_certificate, signed_in_as, row_mac) VALUES "
                 "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                 "?18, ?19, ?20, ?21)";
    IOP_TRY_ASSIGN(auto stmt, db_.prepare(sql));
    // Absent values are NULL, as they always were; reading gives them back as empty.
    auto text = [&stmt](int index, const std::string& value) {
      return value.empty() ? stmt.bind_null(index) : stmt.bind_text(index, value);
    };
    auto blob = [&stmt](int index, const std::string& value) {
      return value.empty() ? stmt.bind_null(index) : stmt.bind_blob(index, value);
    };
    IOP_TRY(stmt.bind_text(1, row.email));
    IOP_TRY(stmt.bind_int64(2, row.use_oauth ? 1 : 0));
    IOP_TRY(blob(3, row.access_token));
    IOP_TRY(blob(4, row.refresh_token));
    IOP_TRY(stmt.bind_int64(5, row.token_expiry));
    IOP_TRY(stmt.bind_int64(6, row.refreshed_at_ms));
    IOP_TRY(blob(7, row.password));
    IOP_TRY(text(8, row.local_password_hash));
    IOP_TRY(text(9, row.upstream_host));
    IOP_TRY(stmt.bind_int64(10, row.upstream_port));
    IOP_TRY(stmt.bind_text(11, row.status));
    IOP_TRY(text(12, row.status_reason));
    IOP_TRY(stmt.bind_int64(13, row.created_at));
    IOP_TRY(stmt.bind_int64(14, row.updated_at));
    IOP_TRY(stmt.bind_text(15, row.provider));
    IOP_TRY(text(16, row.tenant));
    IOP_TRY(text(17, row.client_id));
    IOP_TRY(blob(18, row.client_secret));
    IOP_TRY(blob(19, row.client_certificate));
    IOP_TRY(text(20, row.signed_in_as));
    IOP_TRY(row.row_mac ? stmt.bind_blob(21, *row.row_mac) : stmt.bind_null(21));
    IOP_TRY(stmt.step());
    if (db_.changes() != 1) {
      return fail(Errc::internal, "write of account " + row.email + " changed " +
                                      std::to_string(db_.changes()) + " rows");
    }
    return {};
  }

  Result<void> set_row_mac(std::string_view email, std::string_view mac) override {
    IOP_TRY_ASSIGN(auto stmt,
                   db_.prepare("UPDATE mail_credentials SET row_mac = ?2 WHERE email = ?1"));
    IOP_TRY(stmt.bind_text(1, email));
    IOP_TRY(stmt.bind_blob(2, mac));
    IOP_TRY(stmt.step());
    return {};
  }

  Result<bool> remove(std::string_view email) override {
    IOP_TRY_ASSIGN(auto stmt, db_.prepare("DELETE FROM mail_credentials WHERE email = ?1"));
    IOP_TRY(stmt.bind_text(1, email));
    IOP_TRY(stmt.step());
    return db_.changes() > 0;
  }

  Result<KeyCheck> read_key_check(const MasterKey& key) override {
    return storage::read_key_check(db_, key);
  }

  Result<void> write_key_check(const MasterKey& key, KeyCheck version) override {
    return storage::write_key_check(db_, key, version);
  }

  // A file: nothing to lose a connection to.
  [[nodiscard]] bool concurrent_reads() const override { return false; }

  [[nodiscard]] bool connected() const override { return true; }

  Result<RefreshLockAttempt> try_refresh_lock(std::string_view /*email*/) override {
    return RefreshLockAttempt{};  // unsupported
  }

 private:
  Database db_;
  std::optional<Statement> by_email_;  // load_row's statement, prepared on first use
};

}  // namespace

Result<std::unique_ptr<CredentialRows>> open_sqlite_rows(const std::filesystem::path& path) {
  // Durability::full: a refresh token the endpoint just rotated must survive a power failure.
  IOP_TRY_ASSIGN(auto db, open_database(path, Durability::full));
  return std::make_unique<SqliteRows>(std::move(db));
}

}  // namespace iop::storage
