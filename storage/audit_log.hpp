#pragma once
// The connection log: one append-only, hash-chained row per client connection, written when the
// connection closes (table `connection_log`, schema v2; ARCHITECTURE "Storage").
//
// Nothing secret goes in: the record has no field for a password, token or SASL string.
//
// Tamper evidence. Row ids are 1, 2, 3... without gaps. Each row stores `prev_hash` (the hash of
// the row before it; a fixed genesis value for row 1) and `hash` = SHA-256 over a canonical,
// length-prefixed encoding of all its fields and prev_hash (audit_log.cpp). The head of the log
// (row count and last hash) is kept in the `meta` table, updated in the same transaction as the
// append. verify() then detects, and names the first row affected by:
//   - an edited row (any column, including its own hash),
//   - a deleted row in the middle or at the start,
//   - rows deleted at the end (the head records more rows than there are),
//   - rows swapped or renumbered,
//   - a row inserted outside AuditLog (the head records fewer rows),
//   - an edited or deleted head.
// Not detectable: someone with write access to the whole database file can recompute every
// hash and the head, so a rewritten log verifies. The chain proves consistency, not origin;
// copy the head hash elsewhere (a log line, another machine) to anchor it. Deleting the whole
// table together with the head is also indistinguishable from a log that was never written to.
//
// Durability: the audit connection commits with synchronous=NORMAL (one writer thread, one row
// per closed connection, no fsync each): a process crash loses nothing committed, a power
// failure may roll back the last rows, always together with the head, so the chain stays
// intact. The credentials store's FULL commits on the same file make earlier audit rows durable
// too (the WAL is one sequential file).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
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
  std::string close_reason;   // "client closed", or the upstream `* BYE` text
  std::int64_t messages = 0;  // submission: messages the upstream accepted; 0 for IMAP
  std::string prev_hash;      // set by append(): lowercase hex SHA-256
  std::string hash;           // set by append(): lowercase hex SHA-256
};

// append() passes every text field through sanitize_for_log(field, max_audit_text_bytes)
// (common/sanitize.hpp): control bytes escaped, cut to this many bytes plus a "…(+N bytes)"
// marker (a client controls `username`, an upstream the BYE text in `close_reason`).
inline constexpr std::size_t max_audit_text_bytes = 1024;

// Filters for query(). A row matches when the connection was open at some time in
// [since_ms, until_ms): ended_at_ms >= since_ms and started_at_ms < until_ms.
struct AuditQuery {
  std::optional<std::int64_t> since_ms;
  std::optional<std::int64_t> until_ms;
  std::optional<std::string> account;  // exact match on the normalized email
  std::int64_t limit = 0;              // > 0: only the newest `limit` matching rows
};

// The result of verify().
struct VerifyReport {
  bool intact = true;
  std::int64_t rows = 0;       // rows in the table
  std::int64_t broken_at = 0;  // when !intact: the id of the first row found missing or altered
  std::string reason;          // when !intact: what is wrong with that row, for operators
  std::string head_hash;       // the hash of the last row (the genesis value for an empty log)
};

class AuditLog {
 public:
  // Opens its own connection to the database at `path` (creating and migrating it as
  // CredentialsStore::open does; no master key is needed: the log holds no secrets), with
  // synchronous=NORMAL (see the top of this file). Errc::storage_unavailable.
  static Result<std::unique_ptr<AuditLog>> open(const std::filesystem::path& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends `record` (its id, prev_hash and hash are ignored) as the next row of the chain, and
  // moves the head, in one IMMEDIATE transaction: safe with several threads and processes.
  // Returns the new row's id. Text fields are sanitized (see max_audit_text_bytes). Errc::
  // storage_unavailable (disk, lock held over the busy timeout), Errc::credentials_corrupt when
  // the stored head is malformed (run verify()). Blocks on disk I/O: call it from a worker.
  Result<std::int64_t> append(const ConnectionRecord& record);

  // The rows matching `filter`, oldest first. Errc::storage_unavailable; Errc::
  // credentials_corrupt for a row with an unknown outcome or token source (edited). Blocks.
  Result<std::vector<ConnectionRecord>> query(const AuditQuery& filter);

  // Recomputes the whole chain in one read transaction and compares it with the head. Errors
  // only when the database cannot be read; a broken chain is a VerifyReport with intact=false.
  // Blocks; reads every row.
  Result<VerifyReport> verify();

  struct Impl;

 private:
  explicit AuditLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The row hash of `record` given its id and prev_hash fields (lowercase hex SHA-256); exposed so
// tests and external tools can check the encoding.
std::string connection_record_hash(const ConnectionRecord& record);

// prev_hash of row 1: SHA-256 of "imap-oauth2-proxy connection_log genesis v1", in hex.
const std::string& audit_genesis_hash();

}  // namespace iop::storage
