#include "storage/audit_log.hpp"

// SHA-256 for the chain. OpenSSL is otherwise confined to sealed.cpp (STYLE 3.6); this file
// needs only the one-shot digest and shows no OpenSSL type in its header.
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ascii.hpp"
#include "common/database_url.hpp"
#include "common/sanitize.hpp"
#include "storage/key_check.hpp"
#include "storage/log_rows.hpp"

namespace iop::storage {

namespace {

// The meta rows, each "<id> <hash>" and, when keyed, " <MAC of both>" (meta_mac):
// - the head: the last row's id and hash;
// - the base, after retention: the last deleted row's id and hash (the next row's prev_hash);
// - the boundary, for a log keyed after it was written: the first keyed row's id and its
//   prev_hash; rows before it carry plain SHA-256 hashes.
constexpr std::string_view head_key = "connection_log_head";
constexpr std::string_view base_key = "connection_log_base";
constexpr std::string_view boundary_key = "connection_log_keyed_from";

// Changing an encoding changes every hash: bump the tag and keep the old encoding for old rows.
constexpr std::string_view legacy_hash_domain = "imap-oauth2-proxy connection_log v1";
constexpr std::string_view hash_domain = "imap-oauth2-proxy connection_log v2";
constexpr std::string_view genesis_input = "imap-oauth2-proxy connection_log genesis v1";
constexpr std::string_view chain_key_label = "imap-oauth2-proxy connection_log chain";

constexpr std::array<std::pair<AuditEvent, std::string_view>, 10> event_names = {{
    {AuditEvent::account_added, "account_added"},
    {AuditEvent::account_removed, "account_removed"},
    {AuditEvent::passwd_changed, "passwd_changed"},
    {AuditEvent::refresh_ok, "refresh_ok"},
    {AuditEvent::refresh_failed, "refresh_failed"},
    {AuditEvent::needs_reauth, "needs_reauth"},
    {AuditEvent::reauthorized, "reauthorized"},
    {AuditEvent::audit_rows_dropped, "audit_rows_dropped"},
    {AuditEvent::retention, "retention"},
    {AuditEvent::chain_keyed, "chain_keyed"},
}};

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

// The stored spelling of an enumerator in one of the tables above, and back.
template <class T, std::size_t N>
std::optional<std::string_view> name_in(const std::array<std::pair<T, std::string_view>, N>& table,
                                        T value) {
  for (const auto& [v, name] : table) {
    if (v == value) {
      return name;
    }
  }
  return std::nullopt;
}

template <class T, std::size_t N>
std::optional<T> value_in(const std::array<std::pair<T, std::string_view>, N>& table,
                          std::string_view text) {
  for (const auto& [v, name] : table) {
    if (name == text) {
      return v;
    }
  }
  return std::nullopt;
}

LogRow to_stored(const ConnectionRecord& r) {
  return LogRow{r.id,
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
                r.messages,
                r.event};
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
  return lower_hex(std::string_view(reinterpret_cast<const char*>(digest.data()), size));
}

// The columns both encodings cover, in column order: each integer as 8 bytes, each text
// length-prefixed.
void put_connection_fields(std::string& buf, const LogRow& r) {
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
}

// The v1 encoding (schema v5 and older, plain SHA-256): the domain tag, then every field in
// column order, each integer as 8 bytes and each text length-prefixed; prev_hash is covered,
// `hash` is not; `messages` only when set (it came in v5), so older rows kept their hashes.
std::string legacy_row_hash(const LogRow& r) {
  std::string buf;
  buf.reserve(256 + r.username.size() + r.close_reason.size());
  put_text(buf, legacy_hash_domain);
  put_connection_fields(buf, r);
  put_text(buf, r.prev_hash);
  if (r.messages != 0) {
    put_int(buf, r.messages);
  }
  return sha256_hex(buf);
}

// The v2 encoding: every field, always, then prev_hash; HMAC-SHA256 under the chain key, so only
// a holder of the master key can write a row that verifies.
std::string keyed_row_hash(const Secret& key, const LogRow& r) {
  std::string buf;
  buf.reserve(256 + r.username.size() + r.close_reason.size());
  put_text(buf, hash_domain);
  put_connection_fields(buf, r);
  put_int(buf, r.messages);
  put_text(buf, r.event);
  put_text(buf, r.prev_hash);
  return lower_hex(hmac_sha256(key, buf));
}

// Identifies a run of records as the caller passed them (their fields, not the id or hashes a
// chain gives them): a retried batch is recognised by it.
std::string batch_fingerprint(std::span<const ConnectionRecord> records) {
  std::string buf;
  for (const ConnectionRecord& record : records) {
    LogRow r = to_stored(record);
    r.id = 0;
    put_connection_fields(buf, r);
    put_int(buf, r.messages);
    put_text(buf, r.event);
  }
  return sha256_hex(buf);
}

// A meta mark: "<id> <hash>", keyed "<id> <hash> <mac>".
struct Mark {
  std::int64_t id = 0;
  std::string hash;
  std::string mac;  // empty: written before the chain was keyed (a v1 head)
};

bool is_lower_hex64(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return is_ascii_digit(c) || (c >= 'a' && c <= 'f');  // lower-case hex only
         });
}

std::optional<Mark> parse_mark(std::string_view text) {
  const auto space = text.find(' ');
  if (space == std::string_view::npos) {
    return std::nullopt;
  }
  Mark mark;
  const auto digits = text.substr(0, space);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), mark.id);
  if (ec != std::errc() || end != digits.data() + digits.size() || mark.id < 0) {
    return std::nullopt;
  }
  text.remove_prefix(space + 1);
  const auto second = text.find(' ');
  mark.hash = std::string(text.substr(0, second));
  if (second != std::string_view::npos) {
    mark.mac = std::string(text.substr(second + 1));
    if (!is_lower_hex64(mark.mac)) {
      return std::nullopt;
    }
  }
  if (!is_lower_hex64(mark.hash)) {
    return std::nullopt;
  }
  return mark;
}

// The MAC of a mark binds its name too: a base cannot be passed off as a head.
std::string mark_mac(const Secret& key, std::string_view name, std::int64_t id,
                     std::string_view hash) {
  std::string input;
  put_text(input, name);
  put_int(input, id);
  put_text(input, hash);
  return lower_hex(hmac_sha256(key, input));
}

std::string format_mark(const Secret& key, std::string_view name, std::int64_t id,
                        std::string_view hash) {
  return std::to_string(id) + " " + std::string(hash) + " " + mark_mac(key, name, id, hash);
}

bool mark_verifies(const Secret& key, std::string_view name, const Mark& mark) {
  return !mark.mac.empty() && mac_equal(mark.mac, mark_mac(key, name, mark.id, mark.hash));
}

// A stored mark: nullopt when there is none, an error naming it when it is malformed.
Result<std::optional<Mark>> read_mark(LogRows& rows, std::string_view name) {
  IOP_TRY_ASSIGN(const auto value, rows.read_meta(name));
  if (!value) {
    return std::optional<Mark>();
  }
  auto mark = parse_mark(*value);
  if (!mark) {
    return fail(Errc::credentials_corrupt,
                rows.where() + ": '" + std::string(name) +
                    "' in meta is malformed (edited?): run 'imap-oauth2-proxy audit --verify'");
  }
  return std::optional<Mark>(std::move(*mark));
}

VerifyReport broken(std::int64_t rows, std::int64_t at, std::string reason) {
  VerifyReport report;
  report.intact = false;
  report.rows = rows;
  report.broken_at = at;
  report.reason = std::move(reason);
  return report;
}

std::string key_missing_message(std::string_view what) {
  return std::string(what) +
         " needs the master key (the chain is keyed): open the log with the configuration's key "
         "file ([storage] key_file)";
}

}  // namespace

std::string_view to_string(ConnectionOutcome outcome) {
  return name_in(outcome_names, outcome).value_or("internal_error");
}

std::optional<ConnectionOutcome> parse_connection_outcome(std::string_view text) {
  return value_in(outcome_names, text);
}

std::string_view to_string(TokenSource source) {
  return name_in(source_names, source).value_or("");
}

std::optional<TokenSource> parse_token_source(std::string_view text) {
  return value_in(source_names, text);
}

std::string_view to_string(AuditEvent event) { return name_in(event_names, event).value_or(""); }

std::optional<AuditEvent> parse_audit_event(std::string_view text) {
  return value_in(event_names, text);
}

ConnectionRecord event_record(AuditEvent event, std::string account, std::string detail,
                              std::int64_t now_ms) {
  ConnectionRecord r;
  r.started_at_ms = now_ms;
  r.ended_at_ms = now_ms;
  r.event = std::string(to_string(event));
  r.account = std::move(account);
  r.close_reason = std::move(detail);
  switch (event) {
    case AuditEvent::needs_reauth:
      r.outcome = ConnectionOutcome::needs_reauth;
      break;
    case AuditEvent::refresh_failed:
      r.outcome = ConnectionOutcome::upstream_unavailable;
      break;
    case AuditEvent::audit_rows_dropped:
      r.outcome = ConnectionOutcome::internal_error;
      break;
    default:
      r.outcome = ConnectionOutcome::ok;
  }
  return r;
}

std::optional<AuditAnchor> parse_audit_anchor(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    return std::nullopt;
  }
  AuditAnchor anchor;
  const auto digits = text.substr(0, colon);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), anchor.id);
  if (ec != std::errc() || end != digits.data() + digits.size() || anchor.id < 1) {
    return std::nullopt;  // row ids start at 1; an empty log's head (0) anchors nothing
  }
  anchor.hash = ascii_lowered(text.substr(colon + 1));
  if (!is_lower_hex64(anchor.hash)) {
    return std::nullopt;
  }
  return anchor;
}

Secret audit_chain_key(const MasterKey& master_key) {
  return derive_key(master_key, chain_key_label);
}

std::string connection_record_hash(const ConnectionRecord& record, const Secret& chain_key) {
  return keyed_row_hash(chain_key, to_stored(record));
}

std::string legacy_connection_record_hash(const ConnectionRecord& record) {
  return legacy_row_hash(to_stored(record));
}

const std::string& audit_genesis_hash() {
  // Never destroyed: a writer flushing at process exit (the client library's contexts live in a
  // static registry built before this) must not read a string whose static destructor ran
  // (ASan: heap-use-after-free in the library tests).
  static const std::string* const genesis = new std::string(sha256_hex(genesis_input));
  return *genesis;
}

struct AuditLog::Impl {
  Impl(std::unique_ptr<LogRows> log_rows, std::optional<MasterKey> master_key)
      : rows(std::move(log_rows)), master(std::move(master_key)) {
    if (master) {
      key = audit_chain_key(*master);
    }
  }
  std::mutex mu;  // one connection, used by one thread at a time
  std::unique_ptr<LogRows> rows;
  std::optional<MasterKey> master;  // nullopt: opened for reading
  std::optional<Secret> key;        // the chain key, derived from `master`

  Result<const Secret*> need_key(std::string_view what) {
    if (!key) {
      return fail(Errc::key_error, key_missing_message(what));
    }
    return &*key;
  }

  // Inside a write transaction: chains `records` after the head and moves it. The new head's
  // hash goes to `head_hash` when given.
  Result<std::int64_t> append_locked(std::span<const ConnectionRecord> records,
                                     std::string* head_hash = nullptr);
  // Inside a transaction: the whole chain against the marks and `anchor`.
  Result<VerifyReport> verify_locked(const std::optional<AuditAnchor>& anchor);
  // Inside a write transaction: keys a log written before keying (see audit_log.hpp).
  Result<void> key_legacy_log();

  // A batch whose COMMIT failed: the server may have committed it all the same (the connection
  // dropped after the commit, a failover). The writer retries the same rows first, so the next
  // append checks the chain for it instead of writing its rows a second time.
  struct Unconfirmed {
    std::int64_t head_id = 0;  // the head the failed commit would have left
    std::string head_hash;
    std::size_t rows = 0;            // the batch's first `rows` records
    std::string fingerprint;         // batch_fingerprint of those records
    std::size_t known_rows = 0;      // of which these were committed for certain
    std::string known_fingerprint;   // batch_fingerprint of those
    std::int64_t known_head_id = 0;  // the last of those
  };
  std::optional<Unconfirmed> unconfirmed;
};

AuditLog::AuditLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AuditLog::~AuditLog() = default;

namespace {

// `read_only`: for audit's reading and verifying commands, which must not create or migrate
// anything on a server (a mistyped URL, a role allowed to SELECT only).
Result<std::unique_ptr<LogRows>> open_log_rows(std::string_view database, const Secret& password,
                                               bool read_only = false) {
  if (is_postgres_url(database)) {
    return open_pg_log_rows(database, password, read_only);
  }
  return open_sqlite_log_rows(std::filesystem::path(database));
}

}  // namespace

Result<std::unique_ptr<AuditLog>> AuditLog::open(std::string_view database,
                                                 const Secret& database_password,
                                                 const MasterKey& master_key) {
  IOP_TRY_ASSIGN(auto rows, open_log_rows(database, database_password));
  return open_rows(std::move(rows), master_key);
}

Result<std::unique_ptr<AuditLog>> AuditLog::open_rows(std::unique_ptr<LogRows> rows,
                                                      const MasterKey& master_key) {
  auto impl = std::make_unique<Impl>(std::move(rows), master_key);
  {
    IOP_TRY_ASSIGN(auto tx, impl->rows->begin_append());
    IOP_TRY(impl->key_legacy_log());
    IOP_TRY(tx->commit());
  }
  return std::unique_ptr<AuditLog>(new AuditLog(std::move(impl)));
}

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::filesystem::path& path,
                                                 const MasterKey& master_key) {
  return open(path.string(), Secret(), master_key);
}

Result<std::unique_ptr<AuditLog>> AuditLog::open_for_verifying(std::string_view database,
                                                               const Secret& database_password,
                                                               const MasterKey& master_key) {
  IOP_TRY_ASSIGN(auto rows, open_log_rows(database, database_password, true));
  // Only the key is checked: verifying never writes (the evidence stays as it was found).
  IOP_TRY(rows->read_key_check(master_key));
  return std::unique_ptr<AuditLog>(
      new AuditLog(std::make_unique<Impl>(std::move(rows), master_key)));
}

Result<std::unique_ptr<AuditLog>> AuditLog::open_for_verifying(const std::filesystem::path& path,
                                                               const MasterKey& master_key) {
  return open_for_verifying(path.string(), Secret(), master_key);
}

Result<std::unique_ptr<AuditLog>> AuditLog::open_for_reading(std::string_view database,
                                                             const Secret& database_password) {
  IOP_TRY_ASSIGN(auto rows, open_log_rows(database, database_password, true));
  return std::unique_ptr<AuditLog>(
      new AuditLog(std::make_unique<Impl>(std::move(rows), std::nullopt)));
}

Result<std::unique_ptr<AuditLog>> AuditLog::open_for_reading(const std::filesystem::path& path) {
  return open_for_reading(path.string(), Secret());
}

Result<void> AuditLog::Impl::key_legacy_log() {
  // Whether this file's log may still hold plain-hashed rows is decided by the sealed key check,
  // which nobody without the key can write: only a file whose check predates the keyed chain
  // (v1, v2) is keyed here, and the check moves to v3 in the same transaction, so a plain head
  // found later (an edit without the key) is never keyed again, only reported by verify().
  IOP_TRY_ASSIGN(const KeyCheck check, rows->read_key_check(*master));
  if (check == KeyCheck::v3) {
    return {};
  }
  IOP_TRY_ASSIGN(auto head, read_mark(*rows, head_key));
  IOP_TRY_ASSIGN(auto boundary, read_mark(*rows, boundary_key));
  // A file without a key check is new (or had it deleted): claimed for this key at v3, and
  // nothing in it is keyed after the fact. v1 stays for the credentials store, whose backfill of
  // row MACs it triggers (the store writes v2; the next open of the log writes v3).
  // Not while the check is v1 either: the credentials store moves it to v2 first (its backfill
  // of row MACs), and keying under a v1 check would leave it where a later edit could be keyed.
  const bool legacy = check == KeyCheck::v2 && head && head->mac.empty() && !boundary &&
                      head->id < std::numeric_limits<std::int64_t>::max();
  if (check == KeyCheck::v1) {
    return {};
  }
  if (legacy) {
    // Rows past the plain head are not part of its chain: keying would collide with them and
    // fail every open (serve, account commands). Left for verify() to report.
    IOP_TRY_ASSIGN(const std::int64_t last, rows->max_id());
    if (last > head->id) {
      return {};
    }
  }
  IOP_TRY(rows->write_key_check(*master, KeyCheck::v3));
  if (!legacy) {
    return {};  // empty (every row will be keyed) or keyed already
  }
  // A v1 log: check its plain chain as it stands, then key from the next row on. The MAC'd
  // boundary says where the plain hashes end; the first keyed row's MAC covers the last plain
  // hash, so the old rows stay protected.
  std::string verdict;
  {
    std::int64_t expected_id = 1;
    std::string expected_prev = audit_genesis_hash();
    IOP_TRY(rows->scan([&](const LogRow& r) -> Result<bool> {
      if (r.id != expected_id || r.prev_hash != expected_prev || legacy_row_hash(r) != r.hash) {
        verdict = "BROKEN at row " + std::to_string(r.id);
        return false;
      }
      expected_prev = r.hash;
      ++expected_id;
      return true;
    }));
    if (verdict.empty() && (expected_id - 1 != head->id || expected_prev != head->hash)) {
      verdict = "BROKEN: the head does not match the last row";
    }
  }
  const std::int64_t first_keyed = head->id + 1;
  IOP_TRY(rows->write_meta(boundary_key, format_mark(*key, boundary_key, first_keyed, head->hash)));
  IOP_TRY(rows->write_meta(head_key, format_mark(*key, head_key, head->id, head->hash)));
  const std::string detail =
      "rows 1 to " + std::to_string(head->id) + " were written before the chain was keyed (" +
      (verdict.empty() ? "plain SHA-256 chain intact" : "plain SHA-256 chain " + verdict) +
      "); keyed from row " + std::to_string(first_keyed);
  const ConnectionRecord row = event_record(AuditEvent::chain_keyed, "", detail,
                                            std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  IOP_TRY(append_locked(std::span<const ConnectionRecord>(&row, 1)));
  return {};
}

Result<std::int64_t> AuditLog::Impl::append_locked(std::span<const ConnectionRecord> records,
                                                   std::string* head_hash) {
  IOP_TRY_ASSIGN(const Secret* chain_key, need_key("writing the connection log"));
  IOP_TRY_ASSIGN(auto stored_head, read_mark(*rows, head_key));
  Mark head{0, audit_genesis_hash(), ""};
  if (stored_head.has_value()) {
    // Chaining onto a head that does not verify would launder whatever was done to it.
    if (!mark_verifies(*chain_key, head_key, *stored_head)) {
      return fail(Errc::credentials_corrupt,
                  rows->where() +
                      ": the connection log head in meta does not verify (edited, or written "
                      "with another master key): run 'imap-oauth2-proxy audit --verify'");
    }
    head = std::move(*stored_head);
  } else {
    // No head means nothing was ever appended; rows without a head were put there by hand or
    // the head was deleted. Refuse rather than start a second chain over them.
    IOP_TRY_ASSIGN(const std::int64_t present, rows->count());
    if (present != 0) {
      return fail(Errc::credentials_corrupt,
                  rows->where() +
                      ": connection_log has rows but no head in meta (deleted?): run "
                      "'imap-oauth2-proxy audit --verify'");
    }
  }

  for (const ConnectionRecord& record : records) {
    // Chain from the head, not from the table's last row: a row deleted at the end then shows
    // as a gap before the next one instead of being silently written over.
    LogRow row = to_stored(record);
    row.id = head.id + 1;
    // Not kept verbatim unless it is an email (a typed password must not stay for ever); the
    // sessions already pass it through the same rule, this catches every other writer.
    row.username = printable_username(row.username);
    // Peer-supplied text (a client's username, an upstream's BYE) through the one log
    // sanitizer, cut to max_audit_text_bytes: a row can neither forge lines in `audit` output or
    // an export nor hold a 64 KiB "username".
    for (std::string* field : {&row.client_address, &row.listener, &row.username, &row.account,
                               &row.close_reason, &row.event}) {
      *field = sanitize_for_log(*field, max_audit_text_bytes);
    }
    row.prev_hash = head.hash;
    row.hash = keyed_row_hash(*chain_key, row);

    IOP_TRY(rows->insert(row));
    head = Mark{row.id, row.hash, ""};
  }
  IOP_TRY(rows->write_meta(head_key, format_mark(*chain_key, head_key, head.id, head.hash)));
  if (head_hash != nullptr) {
    *head_hash = head.hash;
  }
  return head.id;
}

Result<std::int64_t> AuditLog::append_batch(std::span<const ConnectionRecord> records) {
  std::lock_guard lock(impl_->mu);
  if (records.empty()) {
    return 0;
  }
  // The chain is locked from reading the head to moving it, so appends from other connections
  // (another proxy process on the same file, another instance on the same PostgreSQL) cannot
  // fork it.
  IOP_TRY_ASSIGN(auto tx, impl_->rows->begin_append());
  // How many leading records a commit that failed did write after all.
  std::size_t done = 0;
  std::int64_t done_head = 0;  // the id of the last of those
  if (impl_->unconfirmed) {
    const auto& u = *impl_->unconfirmed;
    IOP_TRY_ASSIGN(const auto row, impl_->rows->row(u.head_id));
    if (row && row->hash == u.head_hash && records.size() >= u.rows &&
        batch_fingerprint(records.first(u.rows)) == u.fingerprint) {
      done = u.rows;
      done_head = u.head_id;
    } else if (u.known_rows > 0 && records.size() >= u.known_rows &&
               batch_fingerprint(records.first(u.known_rows)) == u.known_fingerprint) {
      done = u.known_rows;
      done_head = u.known_head_id;
    }
  }
  std::int64_t last = done_head;
  const auto rest = records.subspan(done);
  std::string head_hash;
  if (!rest.empty()) {
    IOP_TRY_ASSIGN(last, impl_->append_locked(rest, &head_hash));
  }
  if (auto committed = tx->commit(); !committed) {
    impl_->unconfirmed = Impl::Unconfirmed{last,           head_hash,
                                           records.size(), batch_fingerprint(records),
                                           done,           batch_fingerprint(records.first(done)),
                                           done_head};
    return std::unexpected(committed.error());
  }
  impl_->unconfirmed.reset();
  return last;
}

Result<std::int64_t> AuditLog::append(const ConnectionRecord& record) {
  return append_batch(std::span<const ConnectionRecord>(&record, 1));
}

Result<std::vector<ConnectionRecord>> AuditLog::query(const AuditQuery& filter) {
  std::lock_guard lock(impl_->mu);
  LogRows& rows = *impl_->rows;
  IOP_TRY_ASSIGN(auto found, rows.select(filter));
  std::vector<ConnectionRecord> out;
  out.reserve(found.size());
  for (LogRow& r : found) {
    auto outcome = parse_connection_outcome(r.outcome);
    auto source = parse_token_source(r.token_source);
    if (!outcome || !source) {
      return fail(Errc::credentials_corrupt, rows.where() + ": connection_log row " +
                                                 std::to_string(r.id) + " has an unknown " +
                                                 (outcome ? "token source" : "outcome") +
                                                 " (edited, or written by a newer version): run "
                                                 "'imap-oauth2-proxy audit --verify'");
    }
    if (r.client_port < 0 || r.client_port > 65535) {
      return fail(Errc::credentials_corrupt, rows.where() + ": connection_log row " +
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
    rec.event = std::move(r.event);
    out.push_back(std::move(rec));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Result<std::vector<AccountActivity>> AuditLog::summarize(std::optional<std::int64_t> since_ms) {
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto out, impl_->rows->summarize(since_ms));
  for (AccountActivity& a : out) {
    if (a.status.empty() && !a.account.empty()) {
      a.status = "removed";
    }
  }
  return out;
}

Result<VerifyReport> AuditLog::Impl::verify_locked(const std::optional<AuditAnchor>& anchor) {
  IOP_TRY_ASSIGN(const Secret* chain_key, need_key("verifying the connection log"));
  // A malformed mark is a finding, not an I/O error.
  auto mark = [&](std::string_view name) -> Result<std::optional<Mark>> {
    auto m = read_mark(*rows, name);
    if (!m && m.error().code != Errc::credentials_corrupt) {
      return std::unexpected(m.error());
    }
    return m ? std::move(*m) : std::optional<Mark>(Mark{-1, "", ""});
  };
  IOP_TRY_ASSIGN(const std::int64_t total, rows->count());
  IOP_TRY_ASSIGN(auto head, mark(head_key));
  IOP_TRY_ASSIGN(auto base, mark(base_key));
  IOP_TRY_ASSIGN(auto boundary, mark(boundary_key));
  // A log from before keying that no writer has opened since: its key check predates v3, its
  // head is plain and there is no boundary. Checked as the plain chain it is, up to its head.
  IOP_TRY_ASSIGN(const KeyCheck check, rows->read_key_check(*master));
  // Only a sealed v1/v2 check vouches for that: a missing one (deleted) vouches for nothing.
  const bool unkeyed_log = (check == KeyCheck::v1 || check == KeyCheck::v2) && head &&
                           head->id >= 0 && head->id < std::numeric_limits<std::int64_t>::max() &&
                           head->mac.empty() && !boundary && !base;
  if (check == KeyCheck::absent && (head || total > 0)) {
    return broken(total, 1,
                  "the database's key check is missing (deleted) while the log has rows: nothing "
                  "vouches for them any more");
  }
  if (unkeyed_log) {
    boundary = Mark{head->id + 1, head->hash, ""};
  }
  for (const auto& [name, m] : {std::pair{base_key, &base}, std::pair{boundary_key, &boundary},
                                std::pair{head_key, &head}}) {
    if (m->has_value() && (*m)->id < 0) {
      return broken(total, 1, "'" + std::string(name) + "' in meta is malformed (edited)");
    }
    if (unkeyed_log && name != base_key) {
      continue;  // the plain head and the implied boundary carry no MAC
    }
    if (m->has_value() && !mark_verifies(*chain_key, name, **m)) {
      return broken(total, std::max<std::int64_t>((*m)->id, 1),
                    "'" + std::string(name) + "' in meta " +
                        ((*m)->mac.empty() ? "has no MAC (rewritten without the master key)"
                                           : "does not verify (edited without the master key)"));
    }
  }

  std::int64_t expected_id = base ? base->id + 1 : 1;
  std::string expected_prev = base ? base->hash : audit_genesis_hash();
  std::optional<std::string> anchored_hash;
  if (anchor && base && anchor->id == base->id) {
    anchored_hash = base->hash;
  }
  std::optional<VerifyReport> finding;
  IOP_TRY(rows->scan([&](const LogRow& r) -> Result<bool> {
    const auto stop = [&finding](VerifyReport report) {
      finding = std::move(report);
      return false;
    };
    if (r.id != expected_id) {
      if (r.id < expected_id) {
        return stop(broken(total, r.id,
                           "the row is older than where the chain starts after retention (row " +
                               std::to_string(expected_id) +
                               "): inserted, or the base was edited"));
      }
      const std::string missing =
          r.id - 1 == expected_id
              ? "row " + std::to_string(expected_id) + " is"
              : "rows " + std::to_string(expected_id) + " to " + std::to_string(r.id - 1) + " are";
      return stop(
          broken(total, expected_id,
                 missing + " missing (deleted); the log continues at row " + std::to_string(r.id)));
    }
    if (r.prev_hash != expected_prev) {
      return stop(broken(total, r.id,
                         r.id == 1 ? "its prev_hash is not the genesis value (rows replaced)"
                                   : "its prev_hash does not match the hash of row " +
                                         std::to_string(r.id - 1) +
                                         " (rows reordered, replaced or renumbered)"));
    }
    if (boundary && r.id == boundary->id && r.prev_hash != boundary->hash) {
      return stop(
          broken(total, r.id, "the first keyed row does not follow the unkeyed rows it sealed"));
    }
    const bool plain = boundary && r.id < boundary->id;
    if (plain && !r.event.empty()) {
      // The plain encoding predates the column and does not cover it.
      return stop(broken(total, r.id, "an event was set on a row from before the chain was keyed"));
    }
    const std::string computed = plain ? legacy_row_hash(r) : keyed_row_hash(*chain_key, r);
    if (!mac_equal(computed, r.hash)) {
      return stop(broken(total, r.id,
                         plain ? "its contents do not match its hash (row edited)"
                               : "its contents do not match its MAC (row edited, or rewritten "
                                 "without the key)"));
    }
    if (anchor && r.id == anchor->id) {
      anchored_hash = r.hash;
    }
    expected_prev = r.hash;
    ++expected_id;
    return true;
  }));
  if (finding) {
    return std::move(*finding);
  }

  // The chain of the rows present is sound; the head says whether rows are missing at the end
  // or were added by someone other than AuditLog.
  const std::int64_t last = expected_id - 1;
  if (!head) {
    if (total == 0 && !base) {
      VerifyReport report;
      report.head_hash = audit_genesis_hash();
      if (anchor && anchor->id > 0) {
        return broken(0, anchor->id,
                      "the log is empty but the anchor names row " + std::to_string(anchor->id) +
                          ": it was deleted");
      }
      return report;
    }
    return broken(total, std::max<std::int64_t>(last, 1),
                  "the log head in meta ('connection_log_head') is missing (deleted), or the "
                  "rows were written outside the audit log");
  }
  if (head->id > last) {
    const std::string missing = head->id == last + 1 ? "row " + std::to_string(last + 1) + " is"
                                                     : "rows " + std::to_string(last + 1) + " to " +
                                                           std::to_string(head->id) + " are";
    return broken(total, last + 1,
                  missing + " missing (deleted at the end): the log head records row " +
                      std::to_string(head->id));
  }
  if (head->id < last) {
    return broken(total, head->id + 1,
                  "the row was added outside the audit log: the log head ends at row " +
                      std::to_string(head->id));
  }
  if (head->hash != expected_prev) {
    return broken(total, std::max<std::int64_t>(last, 1),
                  "the hash of the last row differs from the log head (rewritten)");
  }
  if (anchor) {
    const std::int64_t first = base ? base->id + 1 : 1;
    if (anchor->id > last) {
      return broken(total, last + 1,
                    "the log ends at row " + std::to_string(last) + " but the anchor names row " +
                        std::to_string(anchor->id) + ": rows were cut off the end");
    }
    if (!anchored_hash) {
      // Not a finding about the log: this anchor cannot be checked any more.
      return fail(Errc::invalid_argument,
                  "cannot check the anchor: row " + std::to_string(anchor->id) +
                      " was deleted by retention (the chain now starts at row " +
                      std::to_string(first) + "); keep a newer head ([audit] keep_days)");
    }
    if (!mac_equal(*anchored_hash, anchor->hash)) {
      return broken(total, anchor->id,
                    "row " + std::to_string(anchor->id) +
                        " differs from the anchor: the log was rewritten from there on (or the "
                        "tail cut and re-grown)");
    }
  }
  VerifyReport report;
  report.rows = total;
  report.head_id = last;
  report.head_hash = expected_prev;
  report.first_id = base ? base->id + 1 : 1;
  report.unkeyed_rows = unkeyed_log ? head->id : 0;
  return report;
}

Result<VerifyReport> AuditLog::verify(std::optional<AuditAnchor> anchor) {
  std::lock_guard lock(impl_->mu);
  // One read transaction: the marks and the rows come from the same snapshot even while proxies
  // append.
  IOP_TRY_ASSIGN(auto tx, impl_->rows->begin_snapshot());
  IOP_TRY_ASSIGN(auto report, impl_->verify_locked(anchor));
  IOP_TRY(tx->commit());
  return report;
}

Result<PruneReport> AuditLog::prune(std::int64_t cutoff_ms, std::int64_t now_ms,
                                    std::int64_t chunk_rows) {
  std::lock_guard lock(impl_->mu);
  LogRows& rows = *impl_->rows;
  IOP_TRY_ASSIGN(const Secret* chain_key, impl_->need_key("pruning the connection log"));
  chunk_rows = std::max<std::int64_t>(chunk_rows, 1);
  // The whole chain is verified in a read transaction: in the write transaction it would hold
  // the file's write lock for as long as it takes to MAC every row, and the credentials store's
  // commits (a rotated refresh token) would time out behind it.
  // Where each write transaction stops: every chunk_rows-th row of the old prefix, and its last.
  struct Cut {
    std::int64_t id;
    std::string hash;
  };
  std::vector<Cut> cuts;
  VerifyReport check;
  {
    IOP_TRY_ASSIGN(auto read, rows.begin_snapshot());
    IOP_TRY_ASSIGN(check, impl_->verify_locked(std::nullopt));
    if (!check.intact) {
      return fail(Errc::credentials_corrupt,
                  rows.where() + ": not pruning the connection log: it does not verify (row " +
                      std::to_string(check.broken_at) + ": " + check.reason +
                      "); run 'imap-oauth2-proxy audit --verify'");
    }
    // The longest prefix of rows that all ended before the cut-off.
    std::int64_t in_chunk = 0;
    IOP_TRY(rows.scan([&](const LogRow& r) -> Result<bool> {
      if (r.ended_at_ms >= cutoff_ms) {
        return false;
      }
      if (in_chunk == 0) {
        cuts.push_back({});
      }
      cuts.back() = Cut{r.id, r.hash};
      in_chunk = (in_chunk + 1) % chunk_rows;
      return true;
    }));
    IOP_TRY(read->commit());
  }
  PruneReport report;
  report.first_kept = check.first_id;
  // The writes, a chunk each: a first prune of a long log deletes millions of rows, and one
  // transaction would hold the write lock (SQLite: the whole file's, so the credentials store's
  // commits time out behind it; PostgreSQL: the table's, every instance's appends wait) for
  // seconds. Each chunk moves the MAC'd base and records a `retention` event in the same
  // transaction, so the chain verifies between chunks and after an interruption.
  for (const Cut& cut : cuts) {
    const std::int64_t first = report.first_kept;
    IOP_TRY_ASSIGN(auto tx, rows.begin_append());
    // Another writer pruned since the check (instances sharing a PostgreSQL log all prune at
    // start and daily): its MAC'd base moved. Nothing is wrong and nothing is left to do now;
    // the next prune starts from the new base.
    IOP_TRY_ASSIGN(const auto base_now, read_mark(rows, base_key));
    const std::int64_t base_id = base_now ? base_now->id : 0;
    if (base_id != first - 1) {
      // Only a base this program wrote: a deleted or forged one is the tamper it looks like.
      if (!base_now || !mark_verifies(*chain_key, base_key, *base_now)) {
        return fail(Errc::credentials_corrupt,
                    rows.where() +
                        ": the connection log's base mark changed while it was being pruned and "
                        "does not verify: run 'imap-oauth2-proxy audit --verify'");
      }
      IOP_TRY(tx->commit());
      report.first_kept = base_id + 1;
      return report;
    }
    // Only what was verified goes. Rows are append-only, so the prefix can only have changed by
    // an edit in between; the row that becomes the base must still hold the hash that verified,
    // or nothing more is deleted.
    IOP_TRY_ASSIGN(const auto base_row, rows.row(cut.id));
    IOP_TRY_ASSIGN(const std::int64_t min_id, rows.min_id());
    if (!base_row || base_row->hash != cut.hash || min_id != first) {
      return fail(Errc::credentials_corrupt,
                  rows.where() +
                      ": the connection log changed while it was being pruned: run "
                      "'imap-oauth2-proxy audit --verify'");
    }
    IOP_TRY(rows.delete_through(cut.id));
    IOP_TRY(rows.write_meta(base_key, format_mark(*chain_key, base_key, cut.id, cut.hash)));
    IOP_TRY_ASSIGN(auto boundary, read_mark(rows, boundary_key));
    if (boundary && boundary->id <= cut.id + 1) {
      IOP_TRY(rows.delete_meta(boundary_key));  // no unkeyed row is left
    }
    const ConnectionRecord row =
        event_record(AuditEvent::retention, "",
                     "deleted rows " + std::to_string(first) + " to " + std::to_string(cut.id) +
                         " (ended before the retention cut-off); the chain continues from row " +
                         std::to_string(cut.id + 1),
                     now_ms);
    IOP_TRY(impl_->append_locked(std::span<const ConnectionRecord>(&row, 1)));
    IOP_TRY(tx->commit());
    report.deleted += cut.id - first + 1;
    report.first_kept = cut.id + 1;
  }
  return report;
}

}  // namespace iop::storage

#undef IOP_TRY
