// mail_credentials on PostgreSQL (storage/credential_rows.hpp, issue #10).

#include <chrono>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "storage/credential_rows.hpp"
#include "storage/pg_database.hpp"
#include "storage/postgres.hpp"

namespace iop::storage {

namespace {

using pg::Connection;
using pg::Param;
using pg::Rows;

constexpr std::string_view select_rows =
    "SELECT email, use_oauth, access_token, refresh_token, token_expiry, refreshed_at_ms, "
    "password, local_password_hash, upstream_host, upstream_port, status, status_reason, "
    "created_at, updated_at, provider, tenant, client_id, client_secret, client_certificate, "
    "signed_in_as, row_mac FROM mail_credentials";

StoredRow read_row(const Rows& rows, int i) {
  StoredRow r;
  r.email = rows.text(i, 0);
  r.use_oauth = rows.integer(i, 1) != 0;
  r.access_token = rows.bytes(i, 2);
  r.refresh_token = rows.bytes(i, 3);
  r.token_expiry = rows.integer(i, 4);
  r.refreshed_at_ms = rows.integer(i, 5);
  r.password = rows.bytes(i, 6);
  r.local_password_hash = rows.text(i, 7);
  r.upstream_host = rows.text(i, 8);
  r.upstream_port = rows.integer(i, 9);
  r.status = rows.text(i, 10);
  r.status_reason = rows.text(i, 11);
  r.created_at = rows.integer(i, 12);
  r.updated_at = rows.integer(i, 13);
  r.provider = rows.text(i, 14);
  r.tenant = rows.text(i, 15);
  r.client_id = rows.text(i, 16);
  r.client_secret = rows.bytes(i, 17);
  r.client_certificate = rows.bytes(i, 18);
  r.signed_in_as = rows.text(i, 19);
  if (!rows.is_null(i, 20)) {
    r.row_mac = rows.bytes(i, 20);
  }
  return r;
}

// Absent values are NULL, as on SQLite.
Param text_or_null(const std::string& value) {
  return value.empty() ? Param::null() : Param::text(value);
}
Param bytes_or_null(const std::string& value) {
  return value.empty() ? Param::null() : Param::bytes(value);
}

// The lock's key: a 64-bit hash of the account, in its own name space (another program's
// advisory locks on the same database use other keys; two accounts whose hashes collide only
// refresh one after the other).
std::string lock_name(std::string_view email) {
  return "imap-oauth2-proxy refresh " + std::string(email);
}

class PgRefreshLock final : public RefreshLock {
 public:
  PgRefreshLock(std::shared_ptr<pg::Pool> pool, Connection conn, std::string email)
      : pool_(std::move(pool)), conn_(std::move(conn)), email_(std::move(email)) {}
  PgRefreshLock(const PgRefreshLock&) = delete;
  PgRefreshLock& operator=(const PgRefreshLock&) = delete;
  ~PgRefreshLock() override {
    auto unlocked = conn_.exec("SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                               {Param::text(lock_name(email_))});
    if (unlocked && unlocked->size() == 1 && unlocked->text(0, 0) == "t") {
      pool_->give(std::move(conn_));
    }
    // Otherwise the connection is dropped with this object, and its lock with it.
  }

 private:
  std::shared_ptr<pg::Pool> pool_;
  Connection conn_;
  std::string email_;
};

class PgRows;

class PgTransaction final : public RowsTransaction {
 public:
  explicit PgTransaction(PgRows& rows) : rows_(&rows) {}
  ~PgTransaction() override;
  PgTransaction(const PgTransaction&) = delete;
  PgTransaction& operator=(const PgTransaction&) = delete;
  Result<void> commit() override;

 private:
  PgRows* rows_;  // null once committed
};

class PgRows final : public CredentialRows {
 public:
  PgRows(const pg::Target& target, const Secret& password, Connection conn)
      : session_(target, password, std::move(conn)),
        reads_(target, password, pooled_connections),
        locks_(std::make_shared<pg::Pool>(target, password, pooled_connections)) {}

  Result<RefreshLockAttempt> try_refresh_lock(std::string_view email) override {
    const std::string sql = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";
    IOP_TRY_ASSIGN(auto conn, locks_->take());
    auto attempt = conn.exec(sql, {Param::text(lock_name(email))});
    if (!attempt && !conn.healthy()) {
      // A pooled connection the server dropped (a restart) looks healthy until used: once more
      // on a new one, or every first refresh after a restart would go without the lock.
      IOP_TRY_ASSIGN(conn, locks_->connect());
      attempt = conn.exec(sql, {Param::text(lock_name(email))});
    }
    IOP_TRY_ASSIGN(const Rows got, std::move(attempt));
    RefreshLockAttempt out;
    if (got.size() == 1 && got.text(0, 0) == "t") {
      out.state = RefreshLockAttempt::State::acquired;
      out.lock = std::make_unique<PgRefreshLock>(locks_, std::move(conn), std::string(email));
    } else {
      out.state = RefreshLockAttempt::State::held_elsewhere;
      locks_->give(std::move(conn));
    }
    return out;
  }

  Result<std::unique_ptr<RowsTransaction>> begin_write() override {
    // Without the retry in Session::begin the first write after a restart (a refreshed token)
    // would fail and wait in memory.
    IOP_TRY(session_.begin());
    return std::make_unique<PgTransaction>(*this);
  }

  [[nodiscard]] bool concurrent_reads() const override { return true; }

  [[nodiscard]] bool connected() const override { return !pg::Pool::last_read_unreachable(); }

  Result<std::optional<StoredRow>> load_row(std::string_view email, bool for_update) override {
    const bool lock = for_update && session_.in_transaction();
    if (lock) {
      // FOR UPDATE locks nothing when the row does not exist yet: two adds of one new account
      // would both INSERT, and one fail on the key. A transaction lock on the email serializes
      // them as SQLite's BEGIN IMMEDIATE does (the second then updates).
      IOP_TRY_ASSIGN(Connection * conn, session_.get());
      IOP_TRY(conn->exec("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                         {Param::text("imap-oauth2-proxy row " + std::string(email))}));
    }
    const std::string sql = std::string(select_rows) + " WHERE email = $1";
    // Writes on the transaction's connection; plain reads on a pooled one, from any thread and
    // while a write transaction is open (they see what is committed).
    IOP_TRY_ASSIGN(const Rows rows, lock ? session_.read(sql + " FOR UPDATE", {Param::text(email)})
                                         : reads_.read(sql, {Param::text(email)}));
    if (rows.size() == 0) {
      return std::nullopt;
    }
    return read_row(rows, 0);
  }

  Result<std::vector<StoredRow>> load_rows() override {
    // In a transaction (the key check's backfill) on its connection, else on a pooled one.
    const std::string sql = std::string(select_rows) + " ORDER BY email";
    IOP_TRY_ASSIGN(const Rows rows,
                   session_.in_transaction() ? session_.read(sql) : reads_.read(sql));
    std::vector<StoredRow> out;
    out.reserve(static_cast<std::size_t>(rows.size()));
    for (int i = 0; i < rows.size(); ++i) {
      out.push_back(read_row(rows, i));
    }
    return out;
  }

  Result<void> write_row(const StoredRow& row, bool exists) override {
    const char* const sql =
        exists ? "UPDATE mail_credentials SET use_oauth = $2, access_token = $3, "
                 "refresh_token = $4, token_expiry = $5, refreshed_at_ms = $6, password = $7, "
                 "local_password_hash = $8, upstream_host = $9, upstream_port = $10, "
                 "status = $11, status_reason = $12, created_at = $13, updated_at = $14, "
                 "provider = $15, tenant = $16, client_id = $17, client_secret = $18, "
                 "client_certificate = $19, signed_in_as = $20, row_mac = $21 WHERE email = $1"
               : "INSERT INTO mail_credentials (email, use_oauth, access_token, refresh_token, "
                 "token_expiry, refreshed_at_ms, password, local_password_hash, upstream_host, "
                 "upstream_port, status, status_reason, created_at, updated_at, provider, tenant, "
                 "client_id, client_secret, client_certificate, signed_in_as, row_mac) VALUES "
                 "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
                 "$18, $19, $20, $21)";
    IOP_TRY_ASSIGN(Connection * conn, session_.get());
    IOP_TRY_ASSIGN(const Rows done,
                   conn->exec(sql, {Param::text(row.email),
                                    Param::integer(row.use_oauth ? 1 : 0),
                                    bytes_or_null(row.access_token),
                                    bytes_or_null(row.refresh_token),
                                    Param::integer(row.token_expiry),
                                    Param::integer(row.refreshed_at_ms),
                                    bytes_or_null(row.password),
                                    text_or_null(row.local_password_hash),
                                    text_or_null(row.upstream_host),
                                    Param::integer(row.upstream_port),
                                    Param::text(row.status),
                                    text_or_null(row.status_reason),
                                    Param::integer(row.created_at),
                                    Param::integer(row.updated_at),
                                    Param::text(row.provider),
                                    text_or_null(row.tenant),
                                    text_or_null(row.client_id),
                                    bytes_or_null(row.client_secret),
                                    bytes_or_null(row.client_certificate),
                                    text_or_null(row.signed_in_as),
                                    row.row_mac ? Param::bytes(*row.row_mac) : Param::null()}));
    if (done.affected() != 1) {
      return fail(Errc::internal, "write of account " + row.email + " changed " +
                                      std::to_string(done.affected()) + " rows");
    }
    return {};
  }

  Result<void> set_row_mac(std::string_view email, std::string_view mac) override {
    IOP_TRY_ASSIGN(Connection * conn, session_.get());
    IOP_TRY(conn->exec("UPDATE mail_credentials SET row_mac = $2 WHERE email = $1",
                       {Param::text(email), Param::bytes(mac)}));
    return {};
  }

  Result<bool> remove(std::string_view email) override {
    IOP_TRY_ASSIGN(Connection * conn, session_.get());
    IOP_TRY_ASSIGN(const Rows done, conn->exec("DELETE FROM mail_credentials WHERE email = $1",
                                               {Param::text(email)}));
    return done.affected() > 0;
  }

  Result<KeyCheck> read_key_check(const MasterKey& key) override {
    IOP_TRY_ASSIGN(Connection * conn, session_.get());
    if (session_.in_transaction()) {
      IOP_TRY(conn->exec("SELECT pg_advisory_xact_lock($1)", {Param::integer(pg_key_check_lock)}));
    }
    IOP_TRY_ASSIGN(const Rows rows, conn->exec("SELECT value FROM meta WHERE key = $1",
                                               {Param::text(key_check_name)}));
    std::optional<std::string> sealed;
    if (rows.size() > 0) {
      sealed = rows.bytes(0, 0);
    }
    return decode_key_check(sealed, key, session_.target().shown);
  }

  Result<void> write_key_check(const MasterKey& key, KeyCheck version) override {
    IOP_TRY_ASSIGN(const std::string sealed, encode_key_check(key, version));
    IOP_TRY_ASSIGN(Connection * conn, session_.get());
    IOP_TRY(
        conn->exec("INSERT INTO meta (key, value) VALUES ($1, $2) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   {Param::text(key_check_name), Param::bytes(sealed)}));
    return {};
  }

  // For PgTransaction.
  Result<void> end(bool commit) { return session_.end(commit); }

 private:
  // Reads outside a transaction (logins) and refresh locks each take a connection of their own;
  // this many idle ones are kept.
  static constexpr std::size_t pooled_connections = 4;

  pg::Session session_;  // write transactions, under the store's mutex
  pg::Pool reads_;
  std::shared_ptr<pg::Pool> locks_;
};

PgTransaction::~PgTransaction() {
  if (rows_ != nullptr) {
    (void)rows_->end(false);
  }
}

Result<void> PgTransaction::commit() { return std::exchange(rows_, nullptr)->end(true); }

}  // namespace

Result<std::unique_ptr<CredentialRows>> open_pg_rows(std::string_view url, Secret password) {
  IOP_TRY_ASSIGN(auto target, pg::parse_url(url));
  IOP_TRY_ASSIGN(auto conn, open_pg_database(target, password));
  return std::make_unique<PgRows>(target, password, std::move(conn));
}

}  // namespace iop::storage
