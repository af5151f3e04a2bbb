#pragma once
// A small RAII layer over libpq, the PostgreSQL counterpart of storage/sqlite.hpp (issue #10).
// This is the only file that includes <libpq-fe.h> (STYLE 3.6).
//
// Errors are Errc::storage_unavailable carrying PostgreSQL's message, its SQLSTATE and where
// the server is (the URL without any secret). A Connection is not thread-safe: the owner
// serializes access, as with sqlite::Database.
//
// Passwords never travel in the URL: parse_url() refuses one (it would end up in config dumps,
// process listings and messages). They come from `[storage] password_file`, or from libpq's own
// PGPASSFILE / ~/.pgpass, which it reads itself.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"

struct pg_conn;
struct pg_result;

namespace iop::storage::pg {

// A checked connection URL.
struct Target {
  std::string url;    // as configured (no password in it)
  std::string shown;  // "postgresql://user@host:port/db", for messages and logs
};

// Parses `url` with libpq's own parser. Errc::config_error when libpq cannot parse it or when it
// carries a password (in the user part or as `password=`): the message says where to put it.
Result<Target> parse_url(std::string_view url);

// A statement parameter. Text parameters go as text; bytes go in binary format (bytea), so
// arbitrary bytes need no escaping.
class Param {
 public:
  static Param text(std::string_view value) { return Param(std::string(value), false, false); }
  static Param bytes(std::string_view value) { return Param(std::string(value), true, false); }
  static Param integer(std::int64_t value) { return Param(std::to_string(value), false, false); }
  static Param null() { return Param({}, false, true); }

 private:
  friend class Connection;
  Param(std::string value, bool binary, bool is_null)
      : value_(std::move(value)), binary_(binary), null_(is_null) {}
  std::string value_;
  bool binary_;
  bool null_;
};

// The rows of one statement, read in text format. Rows and columns from 0.
class Rows {
 public:
  [[nodiscard]] int size() const;
  // Rows an INSERT, UPDATE or DELETE changed (PQcmdTuples).
  [[nodiscard]] std::int64_t affected() const;
  // The command tag ("COMMIT", "ROLLBACK", "UPDATE 1").
  [[nodiscard]] std::string tag() const;
  [[nodiscard]] bool is_null(int row, int col) const;
  // NULL reads as 0 or as an empty string, as in sqlite::Statement.
  [[nodiscard]] std::int64_t integer(int row, int col) const;
  [[nodiscard]] std::string text(int row, int col) const;
  [[nodiscard]] std::string bytes(int row, int col) const;  // a bytea column, unescaped

 private:
  friend class Connection;
  struct Clear {
    void operator()(pg_result* result) const;
  };
  explicit Rows(pg_result* result) : result_(result) {}
  std::unique_ptr<pg_result, Clear> result_;
};

// One connection.
class Connection {
 public:
  // Connects to `target` (5 s connect timeout). `password` may be empty: libpq then looks in
  // PGPASSFILE or ~/.pgpass, and servers that trust the connection need none.
  static Result<Connection> open(const Target& target, const Secret& password);

  // Runs one statement with `params` ($1, $2, ...).
  Result<Rows> exec(std::string_view sql, std::span<const Param> params);
  Result<Rows> exec(std::string_view sql, std::initializer_list<Param> params = {}) {
    return exec(sql, std::span<const Param>(params.begin(), params.size()));
  }

  // Runs `script`, which may hold several statements and takes no parameters (schema steps,
  // BEGIN/COMMIT). Rows produced are discarded.
  Result<void> run(std::string_view script);

  // False once the connection to the server is lost (a restart): the owner opens a new one.
  [[nodiscard]] bool healthy() const;

  [[nodiscard]] const std::string& shown() const { return shown_; }

 private:
  struct Finish {
    void operator()(pg_conn* conn) const;
  };
  Connection(pg_conn* conn, std::string shown) : conn_(conn), shown_(std::move(shown)) {}
  Error error(std::string_view what, pg_result* result) const;

  std::unique_ptr<pg_conn, Finish> conn_;
  std::string shown_;
};

// One connection that opens itself again after it was lost (a server restart), for an owner that
// keeps one connection for a long time (the credentials rows, the connection log).
//
// After a failed attempt the next waits a second: while the server is down every call fails at
// once instead of each paying a connect (up to its 5 s timeout when packets are dropped). Inside
// a transaction nothing is reopened: what the transaction did is gone with the connection, so
// the caller's error stands. Not thread-safe, like Connection.
class Session {
 public:
  Session(Target target, Secret password, Connection conn)
      : target_(std::move(target)), password_(std::move(password)), conn_(std::move(conn)) {}

  // The connection, opened again first when it was lost (outside a transaction).
  Result<Connection*> get();
  // A statement outside a transaction, sent once more on a new connection when the old one
  // turned out lost: a server restart between two logins costs the second nothing. Inside a
  // transaction, exactly get()->exec().
  Result<Rows> read(std::string_view sql, std::span<const Param> params);
  Result<Rows> read(std::string_view sql, std::initializer_list<Param> params = {}) {
    return read(sql, std::span<const Param>(params.begin(), params.size()));
  }
  // BEGIN (or `begin`), sent once more on a new connection when the old one was lost since its
  // last use: BEGIN did nothing, so it is safe to repeat. Marks the session in a transaction.
  // The default is READ COMMITTED whatever the database's default: the writers take a lock
  // (advisory, FOR UPDATE) and then read what the previous holder committed; under REPEATABLE
  // READ the snapshot would predate the wait.
  Result<void> begin(std::string_view begin = "BEGIN ISOLATION LEVEL READ COMMITTED");
  // COMMIT (checked, see commit()) or ROLLBACK; ends the transaction either way.
  Result<void> end(bool commit);

  [[nodiscard]] bool in_transaction() const { return in_transaction_; }
  [[nodiscard]] const Target& target() const { return target_; }

 private:
  Target target_;
  Secret password_;
  Connection conn_;
  bool in_transaction_ = false;
  std::chrono::steady_clock::time_point retry_at_;  // no reconnect attempt before this
};

// Connections shared by threads that each need one for a moment (a read) or for a while (a
// session advisory lock, which belongs to the connection that took it): take() one, give() it
// back. Thread-safe. Up to `max_idle` idle connections are kept; more are opened while more
// callers need one at once: reads are bounded by the blocking pool's threads, refresh locks by
// the refreshes in flight (one per account at most per instance).
//
// After a failed connect the next attempt waits a second, as in Session: while the server is
// down a login fails at once instead of each paying a connect.
class Pool {
 public:
  Pool(Target target, Secret password, std::size_t max_idle)
      : target_(std::move(target)), password_(std::move(password)), max_idle_(max_idle) {}

  // An idle connection that looks healthy, or a new one.
  Result<Connection> take();
  // A new connection, never an idle one (a pooled one just turned out lost).
  Result<Connection> connect();
  // Kept for the next take() when healthy and fewer than max_idle are idle; else closed.
  void give(Connection conn);
  // `sql` on a pooled connection, outside any transaction; sent once more on a new connection
  // when the pooled one turned out lost (a restart drops them all; each looks healthy until
  // used).
  Result<Rows> read(std::string_view sql, std::initializer_list<Param> params = {});
  // Whether the calling thread's last read() failed for want of a server (no connection could
  // be opened, or it was lost), rather than on the server's answer: that call's own outcome,
  // whatever other threads meet meanwhile.
  [[nodiscard]] static bool last_read_unreachable();

 private:
  Target target_;
  Secret password_;
  std::size_t max_idle_;
  mutable std::mutex mu_;
  std::vector<Connection> idle_;
  std::chrono::steady_clock::time_point retry_at_;  // no connect attempt before this
  bool reachable_ = true;  // the last attempt (any thread's) found the server
  bool probing_ = false;   // a connect is under way while the server is thought gone
};

// COMMIT, checked: a transaction in which a statement failed "commits" as a ROLLBACK, which is
// an error here.
Result<void> commit(Connection& conn);

// A transaction that rolls back unless commit() succeeded.
class Transaction {
 public:
  static Result<Transaction> begin(Connection& conn, std::string_view begin = "BEGIN");
  Transaction(Transaction&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  Result<void> commit();

 private:
  explicit Transaction(Connection* conn) : conn_(conn) {}
  Connection* conn_;  // null once committed or rolled back
};

}  // namespace iop::storage::pg
