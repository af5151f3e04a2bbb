#pragma once
// The connection log: one append-only, keyed hash-chained row per client connection, written when
// the connection closes, and one per token or account event (`refresh_ok`, `needs_reauth`,
// `account_added`...), in one chain (table `connection_log`; ARCHITECTURE "Storage").
//
// Nothing secret goes in: the record has no field for a password, token or SASL string, and a
// username that matched no account is kept only when it is a syntactically valid email (people
// type passwords into the user field): otherwise it is stored as "<not an email, N bytes>".
//
// Tamper evidence. Row ids are consecutive. Each row stores `prev_hash` (the hash of the row
// before it; a fixed genesis value for row 1) and `hash` = HMAC-SHA256, under a key derived from
// the master key (audit_chain_key), over a canonical length-prefixed encoding of all its fields
// and prev_hash. The head of the log (last id and hash) is kept in the `meta` table with its own
// MAC, moved in the same transaction as each append. verify() detects, and names the first row
// affected by:
//   - an edited row (any column, including its own hash), an inserted, deleted, swapped or
//     renumbered row, anywhere;
//   - a chain rewritten by someone without the key (every row and the head carry a MAC);
//   - rows cut off the end with the head rewritten to match (the head's MAC does not verify);
//   - an old head put back after cutting the tail (a replay) only with an anchor: verify()
//     reports the head ("N:HASH"); keep it elsewhere and check later with --expect-head.
// Retention (prune) deletes a whole prefix and records where the chain now starts in a MAC'd
// `meta` value and in a `retention` event row, so the rest still verifies.
// Logs written before the chain was keyed (schema v5 and older: plain SHA-256) keep their rows:
// the first open with the key verifies them, records a MAC'd boundary ("rows before K are
// unkeyed") and appends a `chain_keyed` row saying whether the old part was intact. Rows before
// the boundary stay protected by the first keyed row, whose MAC covers their last hash. That
// happens only while the file's sealed key check (storage/key_check.hpp) predates keying, and
// moves it to v3 in the same transaction: a log edited later to look unkeyed is never keyed
// again, only reported. What stays possible with write access but no key: putting back the
// whole file, or its key check, from a copy taken before keying (an anchored head detects it).
//
// Several instances (issue #10): on PostgreSQL every instance appends to the same chain. An
// append holds a transaction advisory lock from reading the head to moving it, so concurrent
// batches from different instances queue and chain one after the other: ids stay consecutive,
// no row is lost or written twice, and one verify() covers every instance's connections.
//
// Durability: the audit connection commits with synchronous=NORMAL (one writer thread, batched
// rows, no fsync each): a process crash loses nothing committed, a power failure may roll back
// the last rows, always together with the head, so the chain stays intact. The credentials
// store's FULL commits on the same file make earlier audit rows durable too (the WAL is one
// sequential file).

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/sealed.hpp"
#include "storage/token_source.hpp"

namespace iop::storage {

// How a client connection ended.
enum class ConnectionOutcome {
  ok,                    // a normal end: LOGOUT, the client or upstream closed after a session
  auth_failed,           // wrong local password, unknown user, or the upstream refused the token
  needs_reauth,          // the account needs re-authorization (refresh token dead)
  upstream_unavailable,  // upstream IMAP server or token endpoint unreachable
  protocol_error,        // malformed client input, limits exceeded, TLS handshake failure
  timeout,               // pre-auth or idle timeout
  internal_error,        // an unexpected exception or broken invariant in the proxy
  shutdown,              // closed by `serve` draining on SIGINT/SIGTERM after the grace period
  rejected,              // refused at accept (max_connections reached): `* BYE` before greeting
};

// The stored spelling: "ok", "auth_failed", ... (the enumerator names).
std::string_view to_string(ConnectionOutcome outcome);
// The inverse of to_string; nullopt for anything else.
std::optional<ConnectionOutcome> parse_connection_outcome(std::string_view text);

// One connection_log row. Times are unix milliseconds (UTC).
struct ConnectionRecord {
  std::int64_t id = 0;  // assigned by append(); ignored on input
  std::int64_t started_at_ms = 0;
  std::int64_t ended_at_ms = 0;
  std::string client_address;  // "127.0.0.1", "::1"
  int client_port = 0;
  std::string listener;  // "tls:127.0.0.1:1993", "starttls:127.0.0.1:1143"
  std::string username;  // as the client tried it; may be empty
  std::string account;   // the normalized email when the login matched an account; else empty
  ConnectionOutcome outcome = ConnectionOutcome::ok;
  TokenSource token_source = TokenSource::none;
  std::int64_t bytes_client_to_upstream = 0;
  std::int64_t bytes_upstream_to_client = 0;
  std::string close_reason;   // "client closed", the upstream `* BYE` text, or an event's detail
  std::int64_t messages = 0;  // submission: messages the upstream accepted; 0 for IMAP
  // Empty for a connection row; an event name (AuditEvent) for a token or account event, whose
  // detail (error class, AADSTS code, count) goes in close_reason.
  std::string event;
  std::string prev_hash;  // set by append(): lowercase hex SHA-256
  std::string hash;       // set by append(): lowercase hex SHA-256
};

// Token and account events, rows of the same chain as the connections (issue #8): an operator
// sees when and why an account's authorization broke next to its connections.
enum class AuditEvent {
  account_added,
  account_removed,
  passwd_changed,
  refresh_ok,
  refresh_failed,  // transient: detail is the error class
  needs_reauth,    // detail is the AADSTS code, when the endpoint sent one
  reauthorized,
  audit_rows_dropped,  // detail: how many rows the writer had to drop
  retention,           // detail: which rows prune() deleted
  chain_keyed,         // detail: whether the unkeyed rows before it verified
};
std::string_view to_string(AuditEvent event);
std::optional<AuditEvent> parse_audit_event(std::string_view text);

// An event row for `account` at `now_ms` (started = ended = now) with `detail`. Its outcome is
// `ok`, or what the event means for a login (needs_reauth, upstream_unavailable).
ConnectionRecord event_record(AuditEvent event, std::string account, std::string detail,
                              std::int64_t now_ms);

// append() passes every text field through sanitize_for_log(field, max_audit_text_bytes)
// (common/sanitize.hpp): control bytes escaped, cut to this many bytes plus a "…(+N bytes)"
// marker (a client controls `username`, an upstream the BYE text in `close_reason`).
inline constexpr std::size_t max_audit_text_bytes = 1024;

// Filters for query(). A row matches when the connection was open at some time in
// [since_ms, until_ms): ended_at_ms >= since_ms and started_at_ms < until_ms; and every other set
// filter matches exactly.
struct AuditQuery {
  std::optional<std::int64_t> since_ms;
  std::optional<std::int64_t> until_ms;
  std::optional<std::string> account;  // the normalized email
  std::optional<ConnectionOutcome> outcome;
  std::optional<std::string> client_address;  // "127.0.0.1", "::1"
  std::optional<int> client_port;
  std::optional<std::string> event;  // "connection" for connection rows, else a name
  std::int64_t after_id = 0;         // > 0: only rows with a larger id (audit --follow)
  std::int64_t limit = 0;            // > 0: only the newest `limit` matching rows
};

// One account's line of `audit --summary`: its connection rows (not events) since the cut-off,
// and its last refresh event.
struct AccountActivity {
  std::string account;  // empty: logins that matched no account
  std::int64_t connections = 0;
  std::int64_t failures = 0;  // connections whose outcome is not ok
  std::int64_t bytes_client_to_upstream = 0;
  std::int64_t bytes_upstream_to_client = 0;
  std::int64_t distinct_clients = 0;  // distinct client addresses
  std::int64_t last_seen_ms = 0;      // 0: no connection in the period
  std::int64_t last_refresh_ms = 0;   // 0: no refresh_ok event in the log
  std::string status;                 // from mail_credentials; "removed" when no row is left
};

// A head an operator kept elsewhere: the chain must still contain row `id` with this hash.
struct AuditAnchor {
  std::int64_t id = 0;
  std::string hash;
};
// Parses "N:HASH" (as verify() prints the head); nullopt when malformed.
std::optional<AuditAnchor> parse_audit_anchor(std::string_view text);

// The result of verify().
struct VerifyReport {
  bool intact = true;
  std::int64_t rows = 0;       // rows in the table
  std::int64_t broken_at = 0;  // when !intact: the id of the first row found missing or altered
  std::string reason;          // when !intact: what is wrong with that row, for operators
  std::int64_t head_id = 0;    // the last row's id (0 for an empty log)
  std::string head_hash;       // the hash of the last row (the genesis value for an empty log)
  std::int64_t first_id = 0;   // the first row kept (> 1 after retention)
  // Rows 1..unkeyed_rows are from before the chain was keyed and not keyed yet (a log from
  // schema v5 verified without opening it for writing): checked as a plain SHA-256 chain only.
  std::int64_t unkeyed_rows = 0;
};

// What prune() did.
struct PruneReport {
  std::int64_t deleted = 0;     // rows deleted (0: nothing was old enough)
  std::int64_t first_kept = 0;  // the id the chain now starts at
};

class LogRows;  // storage/log_rows.hpp (internal)

class AuditLog {
 public:
  // Opens its own connection to the database at `path` (creating and migrating it as
  // CredentialsStore::open does), with synchronous=NORMAL (see the top of this file). The chain
  // key is derived from `master_key`. Keys a log written before keying (see the top). Errc::
  // storage_unavailable.
  static Result<std::unique_ptr<AuditLog>> open(const std::filesystem::path& path,
                                                const MasterKey& master_key);
  // The same on `database`: an SQLite path, or a postgresql:// URL (storage/postgres.hpp) whose
  // log every proxy instance appends to as one chain; `database_password` as for
  // CredentialsStore::open (empty for an SQLite file).
  static Result<std::unique_ptr<AuditLog>> open(std::string_view database,
                                                const Secret& database_password,
                                                const MasterKey& master_key);
  // For verify(): checks the key against the file's key check and writes nothing, not even the
  // keying of a log from before (verify() reports such a log's plain rows as not keyed yet).
  static Result<std::unique_ptr<AuditLog>> open_for_verifying(const std::filesystem::path& path,
                                                              const MasterKey& master_key);
  static Result<std::unique_ptr<AuditLog>> open_for_verifying(std::string_view database,
                                                              const Secret& database_password,
                                                              const MasterKey& master_key);
  // For reading only (query, summary): no key is needed, since the log holds no secrets.
  // append, prune and verify fail with Errc::key_error naming what is missing.
  static Result<std::unique_ptr<AuditLog>> open_for_reading(const std::filesystem::path& path);
  static Result<std::unique_ptr<AuditLog>> open_for_reading(std::string_view database,
                                                            const Secret& database_password);
  // open() on rows opened by the caller (storage/log_rows.hpp): the engines' tests wrap them.
  static Result<std::unique_ptr<AuditLog>> open_rows(std::unique_ptr<LogRows> rows,
                                                     const MasterKey& master_key);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends `records` (their id, prev_hash and hash are ignored) as the next rows of the chain,
  // and moves the head, in one IMMEDIATE transaction: all or none; safe with several threads
  // and processes. Returns the last new row's id. Text fields are sanitized (see
  // max_audit_text_bytes). Errc::storage_unavailable (disk, lock held over the busy timeout),
  // Errc::credentials_corrupt when the stored head is malformed (run verify()). Blocks on disk
  // I/O: call it from a worker.
  Result<std::int64_t> append_batch(std::span<const ConnectionRecord> records);
  // One row: append_batch of one.
  Result<std::int64_t> append(const ConnectionRecord& record);

  // The rows matching `filter`, oldest first. Errc::storage_unavailable; Errc::
  // credentials_corrupt for a row with an unknown outcome or token source (edited). Blocks.
  Result<std::vector<ConnectionRecord>> query(const AuditQuery& filter);

  // Per account (then the logins that matched no account): its connection rows ending at or
  // after `since_ms`, its last refresh_ok, its status. Every account with a row in the period
  // or in the credentials table is listed, with 0 connections when it had none. Blocks.
  Result<std::vector<AccountActivity>> summarize(std::optional<std::int64_t> since_ms);

  // Recomputes the whole chain in one read transaction and checks it against the head (and
  // `anchor`, when given). Errors only when the database cannot be read or the key is missing;
  // a broken chain is a VerifyReport with intact=false. Blocks; reads every row.
  Result<VerifyReport> verify(std::optional<AuditAnchor> anchor = std::nullopt);

  // Retention: deletes the longest prefix of rows that all ended before `cutoff_ms` (stopping at
  // the first newer row), at most `chunk_rows` rows a transaction; each transaction records
  // where the chain now starts and appends a `retention` event row. Refuses (Errc::
  // credentials_corrupt) when the chain does not verify: pruning must not launder a tampered
  // row into the MAC'd start. An error after some chunks leaves those deleted and the chain
  // verifiable; the report then is not returned, the next prune goes on. Blocks.
  static constexpr std::int64_t prune_chunk_rows = 10'000;
  Result<PruneReport> prune(std::int64_t cutoff_ms, std::int64_t now_ms,
                            std::int64_t chunk_rows = prune_chunk_rows);

  struct Impl;

 private:
  explicit AuditLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `migrate --to` (issue #10): whether the connection log in the SQLite file `from` can be copied
// into the PostgreSQL database `to`: it verifies (a log from before keying is keyed first, as
// any open does), and the target's log is empty. Errc::credentials_corrupt: the source does not
// verify; Errc::already_exists: the target has a log. Writes nothing to the target.
Result<void> check_connection_log_copy(const std::filesystem::path& from, std::string_view to,
                                       const Secret& to_password, const MasterKey& key);

// Copies every row and the chain's marks as stored, in one transaction, then verifies the copy:
// it must verify exactly as the source did (rows, first row, head). `before_commit` runs once the
// rows are written and before they commit (migrate copies the accounts there, so a failure
// leaves neither). Returns the copy's report.
Result<VerifyReport> copy_connection_log(const std::filesystem::path& from, std::string_view to,
                                         const Secret& to_password, const MasterKey& key,
                                         const std::function<Result<void>()>& before_commit);

// The key the chain's MACs use: derive_key(master_key, "imap-oauth2-proxy connection_log chain").
Secret audit_chain_key(const MasterKey& master_key);

// The row hash of `record` given its id and prev_hash fields (lowercase hex HMAC-SHA256 under
// `chain_key`); exposed so tests and external tools can check the encoding.
std::string connection_record_hash(const ConnectionRecord& record, const Secret& chain_key);

// The plain SHA-256 hash rows had before the chain was keyed (schema v5 and older), for tests
// and tools that check such rows.
std::string legacy_connection_record_hash(const ConnectionRecord& record);

// prev_hash of row 1: SHA-256 of "imap-oauth2-proxy connection_log genesis v1", in hex.
const std::string& audit_genesis_hash();

}  // namespace iop::storage
