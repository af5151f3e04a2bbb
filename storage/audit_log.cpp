#include "storage/audit_log.hpp"

// SHA-256 for the chain. OpenSSL is otherwise confined to sealed.cpp (STYLE 3.6); this file
// needs only the one-shot digest and shows no OpenSSL type in its header.
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <exception>
#include <mutex>
#include <optional>
#include <utility>

#include "common/ascii.hpp"
#include "common/sanitize.hpp"
#include "storage/database.hpp"
#include "storage/sqlite.hpp"

namespace iop::storage {

namespace {

using sqlite::Database;
using sqlite::Statement;
using sqlite::Transaction;

// The meta row holding the head of the chain: "<row count> <hash of the last row>".
constexpr std::string_view head_key = "connection_log_head";

// Changing the encoding changes every hash: bump the tag and keep the old encoding for old rows.
constexpr std::string_view hash_domain = "imap-oauth2-proxy connection_log v1";
constexpr std::string_view genesis_input = "imap-oauth2-proxy connection_log genesis v1";

constexpr std::array<std::pair<ConnectionOutcome, std::string_view>, 9> outcome_names = {{
    {ConnectionOutcome::ok, "ok"},
    {ConnectionOutcome::auth_failed, "auth_failed"},
    {ConnectionOutcome::needs_reauth, "needs_reauth"},
    {ConnectionOutcome::upstream_unavailable, "upstream_unavailable"},
    {ConnectionOutcome::protocol_error, "protocol_error"},
    {ConnectionOutcome::timeout, "timeout"},
    {ConnectionOutcome::internal_error, "internal_error"},
    {ConnectionOutcome::shutdown, "shutdown"},
    {ConnectionOutcome::rejected, "rejected"},
}};

constexpr std::array<std::pair<TokenSource, std::string_view>, 6> source_names = {{
    {TokenSource::none, ""},
    {TokenSource::redis, "redis"},
    {TokenSource::database, "database"},
    {TokenSource::refresh, "refresh"},
    {TokenSource::password, "password"},
    {TokenSource::memory, "memory"},
}};

// A row as stored: the enums as their text, exactly what the hash covers. verify() hashes the
// stored text, so a value this version does not know still verifies (or fails) by its bytes.
struct StoredRow {
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
};

StoredRow to_stored(const ConnectionRecord& r) {
  return StoredRow{r.id,
                   r.started_at_ms,
                   r.ended_at_ms,
                   r.client_address,
                   r.client_port,
                   r.listener,
                   r.username,
                   r.account,
                   std::string(to_string(r.outcome)),
                   std::string(to_string(r.token_source)),
                   r.bytes_client_to_upstream,
                   r.bytes_upstream_to_client,
                   r.close_reason,
                   r.prev_hash,
                   r.hash,
                   r.messages};
}

// 8 bytes, big-endian, two's complement.
void put_int(std::string& out, std::int64_t value) {
  const auto u = static_cast<std::uint64_t>(value);
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((u >> shift) & 0xff));
  }
}

// The length as put_int, then the bytes: no separator can be forged inside a value.
void put_text(std::string& out, std::string_view value) {
  put_int(out, static_cast<std::int64_t>(value.size()));
  out.append(value);
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != 32) {
    // SHA-256 in the default provider cannot fail short of memory exhaustion; carrying on
    // would write rows that can never verify.
    std::terminate();
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * size);
  for (unsigned int i = 0; i < size; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 0x0f]);
  }
  return out;
}

// The canonical encoding: the domain tag (fixed length), then every field in column order, each
// integer as 8 bytes and each text length-prefixed; prev_hash is covered, `hash` is not.
std::string row_hash(const StoredRow& r) {
  std::string buf;
  buf.reserve(256 + r.username.size() + r.close_reason.size());
  put_text(buf, hash_domain);
  put_int(buf, r.id);
  put_int(buf, r.started_at_ms);
  put_int(buf, r.ended_at_ms);
  put_text(buf, r.client_address);
  put_int(buf, r.client_port);
  put_text(buf, r.listener);
  put_text(buf, r.username);
  put_text(buf, r.account);
  put_text(buf, r.outcome);
  put_text(buf, r.token_source);
  put_int(buf, r.bytes_client_to_upstream);
  put_int(buf, r.bytes_upstream_to_client);
  put_text(buf, r.close_reason);
  put_text(buf, r.prev_hash);
  // Added in schema v5: only when set, so the rows written before keep their hashes. Every
  // field before is length-prefixed or fixed-size, so the encoding stays unambiguous.
  if (r.messages != 0) {
    put_int(buf, r.messages);
  }
  return sha256_hex(buf);
}

struct Head {
  std::int64_t rows = 0;
  std::string hash;
};

std::string format_head(const Head& head) { return std::to_string(head.rows) + " " + head.hash; }

std::optional<Head> parse_head(std::string_view text) {
  const auto space = text.find(' ');
  if (space == std::string_view::npos) {
    return std::nullopt;
  }
  Head head;
  const auto digits = text.substr(0, space);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), head.rows);
  if (ec != std::errc() || end != digits.data() + digits.size() || head.rows < 0) {
    return std::nullopt;
  }
  head.hash = std::string(text.substr(space + 1));
  if (head.hash.size() != 64 || !std::all_of(head.hash.begin(), head.hash.end(), [](char c) {
        return is_ascii_digit(c) || (c >= 'a' && c <= 'f');  // lower-case hex only
      })) {
    return std::nullopt;
  }
  return head;
}

// The stored head: nullopt when there is none (no row was ever appended), an error when it is
// there but malformed.
Result<std::optional<Head>> read_head(Database& db) {
  IOP_TRY_ASSIGN(auto stmt, db.prepare("SELECT value FROM meta WHERE key = ?1"));
  IOP_TRY(stmt.bind_text(1, head_key));
  IOP_TRY_ASSIGN(auto step, stmt.step());
  if (step != Statement::Step::row) {
    return std::optional<Head>();
  }
  // The value column is a BLOB affinity column; read it as bytes whatever was stored.
  auto head = parse_head(stmt.column_blob(0));
  if (!head) {
    return fail(Errc::credentials_corrupt, "database " + db.path() +
                                               ": the connection log head in meta is malformed "
                                               "(edited?): run 'imap-oauth2-proxy audit --verify'");
  }
  return std::optional<Head>(std::move(*head));
}

Result<std::int64_t> count_rows(Database& db) {
  IOP_TRY_ASSIGN(auto stmt, db.prepare("SELECT count(*) FROM connection_log"));
  IOP_TRY_ASSIGN(auto step, stmt.step());
  return step == Statement::Step::row ? stmt.column_int64(0) : 0;
}

constexpr std::string_view select_columns =
    "SELECT id, started_at_ms, ended_at_ms, client_address, client_port, listener, username, "
    "account, outcome, token_source, bytes_client_to_upstream, bytes_upstream_to_client, "
    "close_reason, prev_hash, hash, messages FROM connection_log";

StoredRow read_row(const Statement& stmt) {
  StoredRow r;
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
  return r;
}

VerifyReport broken(std::int64_t rows, std::int64_t at, std::string reason) {
  VerifyReport report;
  report.intact = false;
  report.rows = rows;
  report.broken_at = at;
  report.reason = std::move(reason);
  return report;
}

}  // namespace

std::string_view to_string(ConnectionOutcome outcome) {
  for (const auto& [value, name] : outcome_names) {
    if (value == outcome) {
      return name;
    }
  }
  return "internal_error";
}

std::optional<ConnectionOutcome> parse_connection_outcome(std::string_view text) {
  for (const auto& [value, name] : outcome_names) {
    if (name == text) {
      return value;
    }
  }
  return std::nullopt;
}

std::string_view to_string(TokenSource source) {
  for (const auto& [value, name] : source_names) {
    if (value == source) {
      return name;
    }
  }
  return "";
}

std::optional<TokenSource> parse_token_source(std::string_view text) {
  for (const auto& [value, name] : source_names) {
    if (name == text) {
      return value;
    }
  }
  return std::nullopt;
}

std::string connection_record_hash(const ConnectionRecord& record) {
  return row_hash(to_stored(record));
}

const std::string& audit_genesis_hash() {
  static const std::string genesis = sha256_hex(genesis_input);
  return genesis;
}

struct AuditLog::Impl {
  explicit Impl(Database database) : db(std::move(database)) {}
  std::mutex mu;  // one connection, used by one thread at a time
  Database db;
};

AuditLog::AuditLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AuditLog::~AuditLog() = default;

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::filesystem::path& path) {
  // NORMAL, not FULL: one fsync per closed connection would be the writer thread's main cost,
  // and a power failure can only drop the newest rows together with their head (audit_log.hpp).
  IOP_TRY_ASSIGN(auto db, open_database(path, Durability::normal));
  return std::unique_ptr<AuditLog>(new AuditLog(std::make_unique<Impl>(std::move(db))));
}

Result<std::int64_t> AuditLog::append(const ConnectionRecord& record) {
  std::lock_guard lock(impl_->mu);
  Database& db = impl_->db;
  // IMMEDIATE: the write lock is held from reading the head to moving it, so appends from other
  // connections (another proxy process on the same file) cannot fork the chain.
  IOP_TRY_ASSIGN(auto tx, Transaction::begin(db));
  IOP_TRY_ASSIGN(auto stored_head, read_head(db));
  Head head{0, audit_genesis_hash()};
  if (stored_head.has_value()) {
    head = std::move(*stored_head);
  } else {
    // No head means nothing was ever appended; rows without a head were put there by hand or
    // the head was deleted. Refuse rather than start a second chain over them.
    IOP_TRY_ASSIGN(const std::int64_t rows, count_rows(db));
    if (rows != 0) {
      return fail(Errc::credentials_corrupt,
                  "database " + db.path() +
                      ": connection_log has rows but no head in meta (deleted?): run "
                      "'imap-oauth2-proxy audit --verify'");
    }
  }

  // Chain from the head, not from the table's last row: a row deleted at the end then shows
  // as a gap before the next one instead of being silently written over.
  StoredRow row = to_stored(record);
  row.id = head.rows + 1;
  // Peer-supplied text (a client's username, an upstream's BYE) through the one log sanitizer,
  // cut to max_audit_text_bytes: a row can neither forge lines in `audit` output or an export
  // nor hold a 64 KiB "username" (often a password typed into the wrong field).
  for (std::string* field :
       {&row.client_address, &row.listener, &row.username, &row.account, &row.close_reason}) {
    *field = sanitize_for_log(*field, max_audit_text_bytes);
  }
  row.prev_hash = head.hash;
  row.hash = row_hash(row);

  IOP_TRY_ASSIGN(
      auto insert,
      db.prepare("INSERT INTO connection_log (id, started_at_ms, ended_at_ms, client_address, "
                 "client_port, "
                 "listener, username, account, outcome, token_source, bytes_client_to_upstream, "
                 "bytes_upstream_to_client, close_reason, prev_hash, hash, messages) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"));
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
  IOP_TRY(insert.step());

  IOP_TRY_ASSIGN(auto move_head,
                 db.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
  IOP_TRY(move_head.bind_text(1, head_key));
  IOP_TRY(move_head.bind_text(2, format_head(Head{row.id, row.hash})));
  IOP_TRY(move_head.step());
  IOP_TRY(tx.commit());
  return row.id;
}

Result<std::vector<ConnectionRecord>> AuditLog::query(const AuditQuery& filter) {
  std::lock_guard lock(impl_->mu);
  Database& db = impl_->db;
  // Only fixed fragments are joined; every value is a bound parameter. Leaving out the unused
  // conditions (rather than `?1 IS NULL OR ...`) lets SQLite use the indexes.
  std::string sql(select_columns);
  std::string where;
  auto add = [&where](std::string_view condition) {
    where += where.empty() ? " WHERE " : " AND ";
    where += condition;
  };
  if (filter.since_ms) {
    add("ended_at_ms >= ?1");
  }
  if (filter.until_ms) {
    add("started_at_ms < ?2");
  }
  if (filter.account) {
    add("account = ?3");
  }
  sql += where;
  // Newest first so LIMIT keeps the newest rows; reversed below.
  sql += " ORDER BY id DESC LIMIT ?4";
  IOP_TRY_ASSIGN(auto stmt, db.prepare(sql));
  if (filter.since_ms) {
    IOP_TRY(stmt.bind_int64(1, *filter.since_ms));
  }
  if (filter.until_ms) {
    IOP_TRY(stmt.bind_int64(2, *filter.until_ms));
  }
  if (filter.account) {
    IOP_TRY(stmt.bind_text(3, *filter.account));
  }
  IOP_TRY(stmt.bind_int64(4, filter.limit > 0 ? filter.limit : -1));  // -1: no limit

  std::vector<ConnectionRecord> out;
  for (;;) {
    IOP_TRY_ASSIGN(auto step, stmt.step());
    if (step == Statement::Step::done) {
      break;
    }
    StoredRow r = read_row(stmt);
    auto outcome = parse_connection_outcome(r.outcome);
    auto source = parse_token_source(r.token_source);
    if (!outcome || !source) {
      return fail(Errc::credentials_corrupt, "database " + db.path() + ": connection_log row " +
                                                 std::to_string(r.id) + " has an unknown " +
                                                 (outcome ? "token source" : "outcome") +
                                                 " (edited, or written by a newer version): run "
                                                 "'imap-oauth2-proxy audit --verify'");
    }
    if (r.client_port < 0 || r.client_port > 65535) {
      return fail(Errc::credentials_corrupt, "database " + db.path() + ": connection_log row " +
                                                 std::to_string(r.id) +
                                                 " has an invalid client_port");
    }
    ConnectionRecord rec;
    rec.id = r.id;
    rec.started_at_ms = r.started_at_ms;
    rec.ended_at_ms = r.ended_at_ms;
    rec.client_address = std::move(r.client_address);
    rec.client_port = static_cast<int>(r.client_port);
    rec.listener = std::move(r.listener);
    rec.username = std::move(r.username);
    rec.account = std::move(r.account);
    rec.outcome = *outcome;
    rec.token_source = *source;
    rec.bytes_client_to_upstream = r.bytes_client_to_upstream;
    rec.bytes_upstream_to_client = r.bytes_upstream_to_client;
    rec.close_reason = std::move(r.close_reason);
    rec.prev_hash = std::move(r.prev_hash);
    rec.hash = std::move(r.hash);
    rec.messages = r.messages;
    out.push_back(std::move(rec));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Result<VerifyReport> AuditLog::verify() {
  std::lock_guard lock(impl_->mu);
  Database& db = impl_->db;
  // One read transaction: the head and the rows come from the same snapshot even while a proxy
  // appends (WAL readers do not block the writer).
  IOP_TRY_ASSIGN(auto tx, Transaction::begin(db, "BEGIN DEFERRED"));
  auto stored_head = read_head(db);
  const bool head_malformed = !stored_head && stored_head.error().code == Errc::credentials_corrupt;
  if (!stored_head && !head_malformed) {
    return std::unexpected(stored_head.error());
  }
  IOP_TRY_ASSIGN(auto stmt, db.prepare(std::string(select_columns) + " ORDER BY id"));

  std::int64_t expected_id = 1;
  std::string expected_prev = audit_genesis_hash();
  std::int64_t rows = 0;
  std::optional<VerifyReport> first_break;
  for (;;) {
    IOP_TRY_ASSIGN(auto step, stmt.step());
    if (step == Statement::Step::done) {
      break;
    }
    ++rows;
    if (first_break) {
      continue;  // keep counting rows for the report
    }
    const StoredRow r = read_row(stmt);
    if (r.id != expected_id) {
      // Ids only grow (ORDER BY a primary key), so r.id > expected_id: rows are missing.
      const std::string missing =
          r.id - 1 == expected_id
              ? "row " + std::to_string(expected_id) + " is"
              : "rows " + std::to_string(expected_id) + " to " + std::to_string(r.id - 1) + " are";
      first_break =
          broken(0, expected_id,
                 missing + " missing (deleted); the log continues at row " + std::to_string(r.id));
      continue;
    }
    if (r.prev_hash != expected_prev) {
      first_break = broken(0, r.id,
                           r.id == 1 ? "its prev_hash is not the genesis value (rows replaced)"
                                     : "its prev_hash does not match the hash of row " +
                                           std::to_string(r.id - 1) +
                                           " (rows reordered, replaced or renumbered)");
      continue;
    }
    if (row_hash(r) != r.hash) {
      first_break = broken(0, r.id, "its contents do not match its hash (row edited)");
      continue;
    }
    expected_prev = r.hash;
    ++expected_id;
  }
  if (first_break) {
    first_break->rows = rows;
    return *first_break;
  }

  // The chain of the rows present is sound; the head says whether rows are missing at the end
  // or were added by someone other than AuditLog.
  const std::int64_t last = expected_id - 1;
  if (head_malformed) {
    return broken(rows, std::max<std::int64_t>(last, 1),
                  "the log head in meta ('connection_log_head') is malformed (edited)");
  }
  if (!stored_head->has_value()) {
    if (rows == 0) {
      VerifyReport report;
      report.head_hash = audit_genesis_hash();
      return report;
    }
    return broken(rows, 1,
                  "the log head in meta ('connection_log_head') is missing (deleted), or the "
                  "rows were written outside the audit log");
  }
  const Head& head = **stored_head;
  if (head.rows > rows) {
    const std::string missing =
        head.rows == last + 1
            ? "row " + std::to_string(last + 1) + " is"
            : "rows " + std::to_string(last + 1) + " to " + std::to_string(head.rows) + " are";
    return broken(rows, last + 1,
                  missing + " missing (deleted at the end): the log head records " +
                      std::to_string(head.rows) + " rows");
  }
  if (head.rows < rows) {
    return broken(rows, head.rows + 1,
                  "the row was added outside the audit log: the log head records only " +
                      std::to_string(head.rows) + " rows");
  }
  if (head.hash != expected_prev) {
    return broken(rows, std::max<std::int64_t>(last, 1),
                  "the hash of the last row differs from the log head (rewritten)");
  }
  IOP_TRY(tx.commit());
  VerifyReport report;
  report.rows = rows;
  report.head_hash = expected_prev;
  return report;
}

}  // namespace iop::storage

#undef IOP_TRY
