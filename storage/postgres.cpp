#include "storage/postgres.hpp"

#include <libpq-fe.h>

#include <charconv>
#include <vector>

#include "common/database_url.hpp"
#include "common/sanitize.hpp"

namespace iop::storage::pg {

namespace {

// libpq's messages end with a newline and may span lines; one sanitized line for ours.
std::string clean(const char* message) {
  std::string_view text = message != nullptr ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.remove_suffix(1);
  }
  return sanitize_for_log(text.empty() ? "no message" : text);
}

struct OptionsFree {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};

// Notices (e.g. "relation already exists, skipping") would go to stderr by default, in the
// middle of a CLI command's output; nothing in them needs an operator.
void ignore_notice(void* /*arg*/, const char* /*message*/) {}

}  // namespace

Result<Target> parse_url(std::string_view url) {
  if (!is_postgres_url(url)) {
    return fail(Errc::config_error,
                "[storage] database: a PostgreSQL database is given as postgresql://user@host/db");
  }
  const std::string text(url);
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, OptionsFree> options(PQconninfoParse(text.c_str(), &error));
  if (!options) {
    // libpq's message is not repeated: it quotes the URL, or the part it could not read, and
    // that may be a password.
    PQfreemem(error);
    return fail(Errc::config_error,
                "[storage] database: not a PostgreSQL URL libpq understands; the form is "
                "postgresql://user@host:port/db?sslmode=verify-full");
  }
  Target target{text, {}};
  std::string user;
  std::string host;
  std::string port;
  std::string dbname;
  for (const PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) {
      continue;
    }
    const std::string_view key = o->keyword;
    if (key == "password" || key == "sslpassword") {
      return fail(Errc::config_error,
                  "[storage] database: the URL holds a password; remove it and put it in the "
                  "file named by [storage] password_file (or in PGPASSFILE), so it stays out of "
                  "the configuration, process listings and messages");
    }
    if (key == "user") {
      user = o->val;
    } else if (key == "host") {
      host = o->val;
    } else if (key == "port") {
      port = o->val;
    } else if (key == "dbname") {
      dbname = o->val;
    }
  }
  target.shown = "postgresql://" + (user.empty() ? "" : user + "@") +
                 (host.empty() ? "localhost" : host) + (port.empty() ? "" : ":" + port) + "/" +
                 dbname;
  target.shown = sanitize_for_log(target.shown);
  return target;
}

void Rows::Clear::operator()(pg_result* result) const { PQclear(result); }

int Rows::size() const { return PQntuples(result_.get()); }

std::int64_t Rows::affected() const {
  const std::string_view text = PQcmdTuples(result_.get());
  std::int64_t n = 0;
  std::from_chars(text.data(), text.data() + text.size(), n);
  return n;
}

std::string Rows::tag() const { return PQcmdStatus(result_.get()); }

bool Rows::is_null(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }

std::int64_t Rows::integer(int row, int col) const {
  const char* value = PQgetvalue(result_.get(), row, col);
  const std::string_view text = value != nullptr ? value : "";
  std::int64_t n = 0;
  std::from_chars(text.data(), text.data() + text.size(), n);
  return n;
}

std::string Rows::text(int row, int col) const {
  return {PQgetvalue(result_.get(), row, col),
          static_cast<std::size_t>(PQgetlength(result_.get(), row, col))};
}

std::string Rows::bytes(int row, int col) const {
  if (is_null(row, col)) {
    return {};
  }
  std::size_t size = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(result_.get(), row, col)), &size);
  if (raw == nullptr) {
    return {};
  }
  std::string out(reinterpret_cast<const char*>(raw), size);
  PQfreemem(raw);
  return out;
}

void Connection::Finish::operator()(pg_conn* conn) const { PQfinish(conn); }

Result<Connection> Connection::open(const Target& target, const Secret& password) {
  // Bounds on every wait, so a server that stops answering (a failover, dropped packets, a
  // frozen instance holding a row lock) costs seconds, not the kernel's 15 minutes or the
  // default 2-hour keepalive, and callers' fallbacks get their error in time:
  // - TCP keepalives and tcp_user_timeout end a connection whose peer has gone silent;
  // - statement_timeout and lock_timeout end a query or a lock wait;
  // - idle_in_transaction_session_timeout ends a session that holds a transaction (and its row
  //   locks) while doing nothing, e.g. an instance stopped between its read and its write.
  std::vector<const char*> keys = {"dbname",           "connect_timeout",  "application_name",
                                   "keepalives",       "keepalives_idle",  "keepalives_interval",
                                   "keepalives_count", "tcp_user_timeout", "options"};
  std::vector<const char*> values = {target.url.c_str(),
                                     "5",
                                     "imap-oauth2-proxy",
                                     "1",
                                     "10",
                                     "5",
                                     "3",
                                     "15000",
                                     "-c statement_timeout=15000 -c lock_timeout=10000 "
                                     "-c idle_in_transaction_session_timeout=60000"};
  if (!password.empty()) {
    keys.push_back("password");
    values.push_back(password.reveal().c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  // expand_dbname = 1: the URL in dbname is parsed, the other keywords add to it.
  Connection conn(PQconnectdbParams(keys.data(), values.data(), 1), target.shown);
  if (!conn.conn_) {
    return fail(Errc::storage_unavailable,
                "PostgreSQL " + target.shown + ": out of memory opening a connection");
  }
  if (PQstatus(conn.conn_.get()) != CONNECTION_OK) {
    return fail(Errc::storage_unavailable,
                "PostgreSQL " + target.shown + ": cannot connect (" +
                    clean(PQerrorMessage(conn.conn_.get())) +
                    "); check that the server runs, the URL, and the password file or PGPASSFILE");
  }
  PQsetNoticeProcessor(conn.conn_.get(), ignore_notice, nullptr);
  return conn;
}

Error Connection::error(std::string_view what, pg_result* result) const {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const char* message =
      result != nullptr ? PQresultErrorMessage(result) : PQerrorMessage(conn_.get());
  std::string text =
      "PostgreSQL " + shown_ + ": " + std::string(what) + " failed: " +
      clean(message != nullptr && *message != '\0' ? message : PQerrorMessage(conn_.get()));
  if (state != nullptr) {
    text += " (SQLSTATE " + sanitize_for_log(state) + ")";
  }
  if (!healthy()) {
    text += "; the connection to the server is lost";
  }
  return Error{Errc::storage_unavailable, std::move(text)};
}

Result<Rows> Connection::exec(std::string_view sql, std::span<const Param> params) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  values.reserve(params.size());
  lengths.reserve(params.size());
  formats.reserve(params.size());
  for (const Param& p : params) {
    values.push_back(p.null_ ? nullptr : p.value_.data());
    lengths.push_back(static_cast<int>(p.value_.size()));
    formats.push_back(p.binary_ ? 1 : 0);
  }
  const std::string statement(sql);
  Rows rows(PQexecParams(conn_.get(), statement.c_str(), static_cast<int>(values.size()), nullptr,
                         values.data(), lengths.data(), formats.data(), 0));
  const auto status = PQresultStatus(rows.result_.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return std::unexpected(error("a statement", rows.result_.get()));
  }
  return rows;
}

Result<void> Connection::run(std::string_view script) {
  const std::string text(script);
  Rows rows(PQexec(conn_.get(), text.c_str()));
  const auto status = PQresultStatus(rows.result_.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    return std::unexpected(error("a script", rows.result_.get()));
  }
  return {};
}

bool Connection::healthy() const { return PQstatus(conn_.get()) == CONNECTION_OK; }

Result<Connection*> Session::get() {
  if (!conn_.healthy() && !in_transaction_) {
    if (std::chrono::steady_clock::now() < retry_at_) {
      return fail(Errc::storage_unavailable,
                  "PostgreSQL " + target_.shown +
                      ": no connection (the last attempt failed less than a second ago)");
    }
    auto reopened = Connection::open(target_, password_);
    if (!reopened) {
      retry_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      return std::unexpected(reopened.error());
    }
    conn_ = std::move(*reopened);
  }
  return &conn_;
}

Result<Rows> Session::read(std::string_view sql, std::span<const Param> params) {
  IOP_TRY_ASSIGN(Connection * conn, get());
  auto rows = conn->exec(sql, params);
  if (rows || in_transaction_ || conn->healthy()) {
    return rows;
  }
  IOP_TRY_ASSIGN(conn, get());
  return conn->exec(sql, params);
}

Result<void> Session::begin(std::string_view begin) {
  IOP_TRY_ASSIGN(Connection * conn, get());
  auto begun = conn->run(begin);
  if (!begun && !conn->healthy()) {
    IOP_TRY_ASSIGN(conn, get());
    begun = conn->run(begin);
  }
  IOP_TRY(begun);
  in_transaction_ = true;
  return {};
}

Result<void> Session::end(bool commit_it) {
  in_transaction_ = false;
  if (!commit_it) {
    if (conn_.healthy()) {
      (void)conn_.run("ROLLBACK");
    }
    return {};
  }
  return commit(conn_);
}

namespace {
// Pool::last_read_unreachable(): the calling thread's last Pool::read().
thread_local bool read_found_no_server = false;
}  // namespace

Result<Connection> Pool::connect() {
  {
    std::lock_guard lock(mu_);
    // While the server is known to be gone, one thread probes and the others fail at once: a
    // connect to a host that drops packets costs its whole timeout (5 s), which every login
    // would otherwise pay.
    if (std::chrono::steady_clock::now() < retry_at_ || (!reachable_ && probing_)) {
      return fail(Errc::storage_unavailable,
                  "PostgreSQL " + target_.shown +
                      ": no connection (the last attempt failed a moment ago; retrying)");
    }
    probing_ = !reachable_;
  }
  auto conn = Connection::open(target_, password_);
  std::lock_guard lock(mu_);
  probing_ = false;
  reachable_ = conn.has_value();
  if (!conn) {
    // From the end of the attempt, not its start: an attempt that took its whole timeout must
    // not leave the next one due at once.
    retry_at_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  }
  return conn;
}

Result<Connection> Pool::take() {
  {
    std::lock_guard lock(mu_);
    while (!idle_.empty()) {
      Connection conn = std::move(idle_.back());
      idle_.pop_back();
      if (conn.healthy()) {
        return conn;
      }
    }
  }
  return connect();
}

void Pool::give(Connection conn) {
  std::lock_guard lock(mu_);
  if (conn.healthy() && idle_.size() < max_idle_) {
    idle_.push_back(std::move(conn));
  }
}

Result<Rows> Pool::read(std::string_view sql, std::initializer_list<Param> params) {
  read_found_no_server = true;  // until a connection answers
  auto conn = take();
  if (!conn) {
    return std::unexpected(conn.error());
  }
  auto rows = conn->exec(sql, params);
  if (!rows && !conn->healthy()) {
    conn = connect();
    if (!conn) {
      return std::unexpected(conn.error());
    }
    rows = conn->exec(sql, params);
  }
  read_found_no_server = !rows && !conn->healthy();
  {
    std::lock_guard lock(mu_);
    reachable_ = !read_found_no_server;
  }
  give(std::move(*conn));
  return rows;
}

bool Pool::last_read_unreachable() { return read_found_no_server; }

Result<Transaction> Transaction::begin(Connection& conn, std::string_view begin) {
  IOP_TRY(conn.run(begin));
  return Transaction(&conn);
}

Transaction::~Transaction() {
  if (conn_ != nullptr) {
    (void)conn_->run("ROLLBACK");
  }
}

Result<void> Transaction::commit() { return pg::commit(*std::exchange(conn_, nullptr)); }

Result<void> commit(Connection& conn) {
  IOP_TRY_ASSIGN(const Rows done, conn.exec("COMMIT"));
  // COMMIT of a transaction a statement already failed in "succeeds" as a ROLLBACK.
  if (done.tag() != "COMMIT") {
    return fail(Errc::storage_unavailable,
                "PostgreSQL " + conn.shown() + ": the transaction was rolled back, not committed");
  }
  return {};
}

}  // namespace iop::storage::pg
