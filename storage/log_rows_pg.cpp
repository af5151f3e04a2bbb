// connection_log on PostgreSQL (storage/log_rows.hpp, issue #10): one chain that every proxy
// instance appends to.

#include <limits>
#include <utility>

#include "storage/log_rows.hpp"
#include "storage/pg_database.hpp"
#include "storage/postgres.hpp"

namespace iop::storage {

namespace {

using pg::Param;
using pg::Rows;

// Held from reading the chain's head to moving it: appends from every instance queue here, so
// ids stay consecutive and each row chains onto the one before it. The ASCII of "iop-clog".
constexpr std::int64_t chain_lock = 0x696f702d636c6f67;

// Rows scan() reads per statement: libpq holds a whole result in memory.
constexpr std::int64_t scan_page = 10'000;

LogRow read_row(const Rows& rows, int i) {
  LogRow r;
  r.id = rows.integer(i, 0);
  r.started_at_ms = rows.integer(i, 1);
  r.ended_at_ms = rows.integer(i, 2);
  r.client_address = rows.text(i, 3);
  r.client_port = rows.integer(i, 4);
  r.listener = rows.text(i, 5);
  r.username = rows.text(i, 6);
  r.account = rows.text(i, 7);
  r.outcome = rows.text(i, 8);
  r.token_source = rows.text(i, 9);
  r.bytes_client_to_upstream = rows.integer(i, 10);
  r.bytes_upstream_to_client = rows.integer(i, 11);
  r.close_reason = rows.text(i, 12);
  r.prev_hash = rows.text(i, 13);
  r.hash = rows.text(i, 14);
  r.messages = rows.integer(i, 15);
  r.event = rows.text(i, 16);
  return r;
}

class PgLogRows;

class PgLogTransaction final : public LogTransaction {
 public:
  PgLogTransaction(pg::Session& session, bool& appending)
      : session_(&session), appending_(&appending) {}
  ~PgLogTransaction() override {
    if (session_ != nullptr) {
      *appending_ = false;
      (void)session_->end(false);
    }
  }
  PgLogTransaction(const PgLogTransaction&) = delete;
  PgLogTransaction& operator=(const PgLogTransaction&) = delete;
  Result<void> commit() override {
    *appending_ = false;
    return std::exchange(session_, nullptr)->end(true);
  }

 private:
  pg::Session* session_;  // null once committed
  bool* appending_;       // PgLogRows::appending_
};

class PgLogRows final : public LogRows {
 public:
  PgLogRows(const pg::Target& target, const Secret& password, pg::Connection conn)
      : session_(target, password, std::move(conn)), where_("PostgreSQL " + target.shown) {}

  [[nodiscard]] const std::string& where() const override { return where_; }

  Result<std::unique_ptr<LogTransaction>> begin_append() override {
    // READ COMMITTED whatever the database's default: each statement after the lock wait then
    // sees the head the previous holder committed. Under REPEATABLE READ the snapshot would be
    // taken at the lock statement, before the wait, and two instances would chain onto the same
    // head (one fails on the duplicate id and its rows wait for a retry).
    IOP_TRY(session_.begin("BEGIN ISOLATION LEVEL READ COMMITTED"));
    auto tx = std::make_unique<PgLogTransaction>(session_, appending_);
    appending_ = true;
    IOP_TRY(exec("SELECT pg_advisory_xact_lock($1)", {Param::integer(chain_lock)}));
    return std::unique_ptr<LogTransaction>(std::move(tx));
  }

  Result<std::unique_ptr<LogTransaction>> begin_snapshot() override {
    IOP_TRY(session_.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
    auto tx = std::make_unique<PgLogTransaction>(session_, appending_);
    // verify() and prune's check read every row: no statement timeout for them.
    IOP_TRY(exec("SET LOCAL statement_timeout = 0", {}));
    return std::unique_ptr<LogTransaction>(std::move(tx));
  }

  Result<std::optional<std::string>> read_meta(std::string_view key) override {
    IOP_TRY_ASSIGN(const Rows rows,
                   session_.read("SELECT value FROM meta WHERE key = $1", {Param::text(key)}));
    if (rows.size() == 0) {
      return std::optional<std::string>();
    }
    return std::optional<std::string>(rows.bytes(0, 0));
  }

  Result<void> write_meta(std::string_view key, std::string_view value) override {
    IOP_TRY(
        exec("INSERT INTO meta (key, value) VALUES ($1, $2) "
             "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
             {Param::text(key), Param::bytes(value)}));
    return {};
  }

  Result<void> delete_meta(std::string_view key) override {
    IOP_TRY(exec("DELETE FROM meta WHERE key = $1", {Param::text(key)}));
    return {};
  }

  Result<KeyCheck> read_key_check(const MasterKey& key) override {
    // Only a writer that may write the check serializes with the others: a verify holding the
    // lock for as long as it reads the log would make every instance starting meanwhile wait
    // (and time out).
    if (appending_) {
      IOP_TRY(exec("SELECT pg_advisory_xact_lock($1)", {Param::integer(pg_key_check_lock)}));
    }
    IOP_TRY_ASSIGN(auto sealed, read_meta(key_check_name));
    return decode_key_check(sealed, key, session_.target().shown);
  }

  Result<void> write_key_check(const MasterKey& key, KeyCheck version) override {
    IOP_TRY_ASSIGN(const std::string sealed, encode_key_check(key, version));
    return write_meta(key_check_name, sealed);
  }

  Result<std::int64_t> count() override { return single("SELECT count(*) FROM connection_log"); }
  Result<std::int64_t> max_id() override { return single("SELECT max(id) FROM connection_log"); }
  Result<std::int64_t> min_id() override { return single("SELECT min(id) FROM connection_log"); }

  Result<std::optional<LogRow>> row(std::int64_t id) override {
    IOP_TRY_ASSIGN(const Rows rows, session_.read("SELECT " + std::string(log_columns) +
                                                      " FROM connection_log WHERE id = $1",
                                                  {Param::integer(id)}));
    if (rows.size() == 0) {
      return std::optional<LogRow>();
    }
    return std::optional<LogRow>(read_row(rows, 0));
  }

  Result<void> insert(const LogRow& row) override {
    IOP_TRY(exec(
        insert_sql_,
        {Param::integer(row.id), Param::integer(row.started_at_ms), Param::integer(row.ended_at_ms),
         Param::text(row.client_address), Param::integer(row.client_port),
         Param::text(row.listener), Param::text(row.username), Param::text(row.account),
         Param::text(row.outcome), Param::text(row.token_source),
         Param::integer(row.bytes_client_to_upstream), Param::integer(row.bytes_upstream_to_client),
         Param::text(row.close_reason), Param::text(row.prev_hash), Param::text(row.hash),
         Param::integer(row.messages), Param::text(row.event)}));
    return {};
  }

  Result<void> scan(const std::function<Result<bool>(const LogRow&)>& visit) override {
    // By pages of ids: in the caller's snapshot transaction the pages are one consistent read.
    std::int64_t after = std::numeric_limits<std::int64_t>::min();
    for (;;) {
      IOP_TRY_ASSIGN(const Rows rows,
                     session_.read("SELECT " + std::string(log_columns) +
                                       " FROM connection_log WHERE id > $1 ORDER BY id LIMIT $2",
                                   {Param::integer(after), Param::integer(scan_page)}));
      for (int i = 0; i < rows.size(); ++i) {
        const LogRow r = read_row(rows, i);
        after = r.id;
        IOP_TRY_ASSIGN(const bool more, visit(r));
        if (!more) {
          return {};
        }
      }
      if (rows.size() < scan_page) {
        return {};
      }
    }
  }

  Result<std::vector<LogRow>> select(const AuditQuery& filter) override {
    const LogQuery q = log_select_sql(filter, '$');
    std::vector<Param> params;
    params.reserve(q.params.size());
    for (const auto& value : q.params) {
      params.push_back(value.integer ? Param::integer(*value.integer) : Param::text(value.text));
    }
    IOP_TRY_ASSIGN(const Rows rows, report_read(q.sql, params));
    std::vector<LogRow> out;
    out.reserve(static_cast<std::size_t>(rows.size()));
    for (int i = 0; i < rows.size(); ++i) {
      out.push_back(read_row(rows, i));
    }
    return out;
  }

  Result<std::vector<AccountActivity>> summarize(std::optional<std::int64_t> since_ms) override {
    const Param since = Param::integer(since_ms.value_or(std::numeric_limits<std::int64_t>::min()));
    IOP_TRY_ASSIGN(const Rows rows, report_read(log_summary_sql('$'), std::span(&since, 1)));
    std::vector<AccountActivity> out;
    for (int i = 0; i < rows.size(); ++i) {
      AccountActivity a;
      a.account = rows.text(i, 0);
      a.connections = rows.integer(i, 1);
      a.failures = rows.integer(i, 2);
      a.bytes_client_to_upstream = rows.integer(i, 3);
      a.bytes_upstream_to_client = rows.integer(i, 4);
      a.distinct_clients = rows.integer(i, 5);
      a.last_seen_ms = rows.integer(i, 6);
      a.last_refresh_ms = rows.integer(i, 7);  // NULL reads as 0
      a.status = rows.text(i, 8);
      out.push_back(std::move(a));
    }
    return out;
  }

  Result<void> delete_through(std::int64_t last) override {
    // The table's owner (the proxy's role) may switch its own trigger off; ALTER TABLE is
    // transactional, so the trigger is off for this transaction only, and any other writer
    // waits on the table lock it takes until the commit.
    // A first prune of a long log deletes many rows: no statement timeout for it.
    IOP_TRY(exec("SET LOCAL statement_timeout = 0", {}));
    IOP_TRY(exec("ALTER TABLE connection_log DISABLE TRIGGER connection_log_no_delete", {}));
    IOP_TRY(exec("DELETE FROM connection_log WHERE id <= $1", {Param::integer(last)}));
    IOP_TRY(exec("ALTER TABLE connection_log ENABLE TRIGGER connection_log_no_delete", {}));
    return {};
  }

 private:
  Result<Rows> exec(std::string_view sql, std::initializer_list<Param> params) {
    return session_.read(sql, params);
  }

  // A statement of `audit` (a query, the summary) over a log that may hold millions of rows:
  // without the connection's statement timeout (meant for the login path), in a read-only
  // transaction of its own.
  Result<Rows> report_read(std::string_view sql, std::span<const Param> params) {
    if (session_.in_transaction()) {
      return session_.read(sql, params);
    }
    IOP_TRY(session_.begin("BEGIN READ ONLY"));
    PgLogTransaction tx(session_, appending_);
    IOP_TRY(exec("SET LOCAL statement_timeout = 0", {}));
    IOP_TRY_ASSIGN(Rows rows, session_.read(sql, params));
    IOP_TRY(tx.commit());
    return rows;
  }

  Result<std::int64_t> single(std::string_view sql) {
    IOP_TRY_ASSIGN(const Rows rows, session_.read(sql));
    return rows.size() > 0 ? rows.integer(0, 0) : 0;  // NULL reads as 0
  }

  pg::Session session_;
  bool appending_ = false;  // inside begin_append()'s transaction
  std::string where_;
  std::string insert_sql_ = log_insert_sql('$');
};

}  // namespace

Result<std::unique_ptr<LogRows>> open_pg_log_rows(std::string_view url, const Secret& password,
                                                  bool read_only) {
  IOP_TRY_ASSIGN(auto target, pg::parse_url(url));
  IOP_TRY_ASSIGN(auto conn, read_only ? open_pg_database_for_reading(target, password)
                                      : open_pg_database(target, password));
  return std::unique_ptr<LogRows>(std::make_unique<PgLogRows>(target, password, std::move(conn)));
}

}  // namespace iop::storage
