#pragma once
// The credentials database (SQLite, or PostgreSQL for several instances: issue #10): the source
// of truth for refresh tokens.
//
// Every row carries a row MAC (HMAC-SHA256 under a key derived from the master key) over the
// columns that decide where a secret goes or who may use it: upstream host and port, provider,
// tenant, client id, signed_in_as, use_oauth, local password hash, status, and the sealed secrets
// themselves. A row edited without the key (or copied from another account) is
// Errc::credentials_corrupt for that account only; see docs/design.md, "Secrets at rest".
//
// Thread-safe (one internal mutex; one SQLite connection). Calls block on disk I/O: callers on an
// I/O thread must hop to a worker first. Several processes may open the same file (WAL mode, busy
// timeout). Token writes run with synchronous=FULL, so a committed update survives a crash.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/sealed.hpp"

namespace iop::storage {

enum class AccountStatus { active, needs_reauth };
std::string_view to_string(AccountStatus status);

// One row of mail_credentials, secrets decrypted.
struct Credentials {
  std::string email;  // lower-case
  bool use_oauth = true;
  Secret access_token;
  Secret refresh_token;
  std::int64_t token_expiry = 0;     // unix seconds; 0 when there is no access token
  std::int64_t refreshed_at_ms = 0;  // when the stored tokens were obtained (unix ms); 0 = never
  Secret password;                   // upstream password for use_oauth = false accounts
  std::string local_password_hash;   // empty: no local password set
  std::string upstream_host;         // empty: the configured default upstream
  int upstream_port = 0;             // 0: the configured default
  AccountStatus status = AccountStatus::active;
  std::string status_reason;  // why the account needs re-authorization (no secrets)
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
  // How the account is authorized (auth/provider.hpp): a profile name, and the account's own
  // tenant and client id (empty: the profile's).
  std::string provider = "default";
  std::string tenant;
  std::string client_id;
  Secret client_secret;       // app-only accounts: the client secret, or
  Secret client_certificate;  // the PEM certificate and private key for a client assertion
  std::string signed_in_as;   // who signed in, when not the account itself (shared mailboxes)
};

// What a client login reads (login_record): nothing secret, nothing decrypted.
struct LoginRecord {
  std::string email;                // lower-case
  std::string local_password_hash;  // empty: no local password set
  std::string upstream_host;        // empty: the configured default upstream
  int upstream_port = 0;            // 0: the configured default
  std::string provider = "default";
  // The database server could not be reached (a PostgreSQL restart or failover): this is the
  // record the last successful read returned, at most 15 minutes ago, kept in memory for exactly
  // that case, so logins of accounts whose token is cached go on during the outage. A change
  // made elsewhere meanwhile is not seen. Never on SQLite.
  bool from_memory = false;
};

// What `account list` shows: nothing secret, nothing decrypted.
struct AccountSummary {
  // false: the row does not match its row MAC (changed outside the program, copied from another
  // account, or inserted with none). get() then fails with Errc::credentials_corrupt, and the
  // values below are an attacker's as much as the operator's: show them, never reuse them.
  bool verified = true;
  std::string email;
  bool use_oauth = true;
  AccountStatus status = AccountStatus::active;
  std::string status_reason;
  std::int64_t token_expiry = 0;
  std::int64_t refreshed_at_ms = 0;
  bool has_local_password = false;
  std::string upstream_host;
  int upstream_port = 0;
  std::string provider;
  std::string tenant;
  std::string client_id;
  std::string signed_in_as;
};

// The result of a refresh, to be committed.
struct TokenUpdate {
  Secret access_token;
  std::int64_t token_expiry = 0;
  std::optional<Secret> refresh_token;  // set when the endpoint rotated it
  std::int64_t refreshed_at_ms = 0;     // when the grant was obtained
};

class CredentialRows;  // storage/credential_rows.hpp: the table on one engine

// An account's refresh lock in the database, held by this instance until destroyed (issue #10:
// instances that share a PostgreSQL database but no Redis refresh an account once). Destroying
// it talks to the server: do it on a worker thread. An instance that dies holding one loses it
// with its connection.
class RefreshLock {
 public:
  virtual ~RefreshLock() = default;
};

struct RefreshLockAttempt {
  enum class State {
    acquired,        // `lock` holds it
    held_elsewhere,  // another instance (or another refresh here) holds it
    unsupported,     // SQLite: instances on one machine share Redis or refresh on their own
  };
  State state = State::unsupported;
  std::unique_ptr<RefreshLock> lock;
};

class CredentialsStore {
 public:
  // Opens (creating when missing) the database at `path`, applies pending migrations, and checks
  // that `key` is the key this database was written with (Errc::key_error otherwise). On the
  // first open of a database from schema v3 or earlier, computes every row's MAC (one
  // transaction, no user action); that is the only time a missing MAC is ever filled in.
  static Result<std::unique_ptr<CredentialsStore>> open(const std::filesystem::path& path,
                                                        MasterKey key);
  // The same on `database`: an SQLite file path, or a PostgreSQL URL (postgresql://..., issue
  // #10) with `database_password` for it (empty: PGPASSFILE, or none needed). The schema, the
  // sealing and every rule below are the same on both engines.
  static Result<std::unique_ptr<CredentialsStore>> open(std::string_view database,
                                                        const Secret& database_password,
                                                        MasterKey key);
  ~CredentialsStore();
  CredentialsStore(const CredentialsStore&) = delete;
  CredentialsStore& operator=(const CredentialsStore&) = delete;

  // The account's row with secrets decrypted. Errc::not_found, Errc::credentials_corrupt (a
  // secret that does not decrypt, or a row that does not match its MAC: only this account is
  // affected), Errc::storage_unavailable.
  Result<Credentials> get(std::string_view email);

  // What a client login needs before its password check: the account's row with its MAC
  // checked (a local password hash or upstream changed outside the program is refused, as
  // get() refuses it) and no secret decrypted, since the login uses none of them. Five AES-GCM
  // opens were two thirds of a cached login's local check. The same errors as get(), except
  // that when the database server cannot be reached the last record read for this account is
  // returned with from_memory set, when there is one (see LoginRecord::from_memory).
  Result<LoginRecord> login_record(std::string_view email);

  // Every account, by email, each with `verified` (its MAC checked; nothing decrypted).
  Result<std::vector<AccountSummary>> list();

  // Adds the account, or when it exists, replaces its upstream credentials (OAuth tokens or
  // password, use_oauth, upstream, provider settings and client credentials) and sets it active
  // again, keeping its local password hash and created_at. `row.email` must be normalized
  // already. The local password hash is written only for a new account. An existing row that
  // does not verify is replaced as if new: none of its values is kept.
  Result<void> upsert_account(const Credentials& row);

  // Commits a refresh in one transaction with synchronous=FULL. Applied only when the stored
  // tokens are older (refreshed_at_ms < update.refreshed_at_ms), so a late retry never
  // overwrites a newer refresh token; returns false when skipped for that reason. The refresh
  // token column changes only when update.refresh_token is set. Also sets status active.
  // Errc::credentials_corrupt when the stored row does not verify (it is left as it is).
  Result<bool> update_tokens(std::string_view email, const TokenUpdate& update);

  // Marks the account needs_reauth with a reason; keeps every stored secret.
  // Errc::credentials_corrupt when the stored row does not verify.
  Result<void> mark_needs_reauth(std::string_view email, std::string_view reason);

  // Sets (empty: clears) the local password hash. Errc::credentials_corrupt when the stored row
  // does not verify: remove the account and add it again.
  Result<void> set_local_password_hash(std::string_view email, std::string_view hash);

  // Deletes the account; returns false when there was none.
  Result<bool> remove(std::string_view email);

  // Tries once, without waiting, to take `email`'s refresh lock (see RefreshLock). Does not take
  // the store's mutex: the lock has its own connection. Errc::storage_unavailable when the
  // server cannot be reached.
  Result<RefreshLockAttempt> try_refresh_lock(std::string_view email);

  struct Impl;

 private:
  explicit CredentialsStore(std::unique_ptr<Impl> impl);
  static Result<std::unique_ptr<CredentialsStore>> open_rows(std::unique_ptr<CredentialRows> rows,
                                                             MasterKey key);
  std::unique_ptr<Impl> impl_;
};

// `migrate --to` (issue #10): copies every account row of the SQLite database `from` into the
// PostgreSQL database `to`, which must hold no account yet, as stored: sealed secrets and row
// MACs are bound to the email and column, not to the engine, so nothing is decrypted or sealed
// again. Both databases are first opened as stores with `key` (its key check, the schema), the
// rows are written in one transaction, then read back and compared field by field, and the
// target's accounts must verify exactly where the source's did. Returns the number of accounts.
// Errc::not_found: no file at `from`; Errc::already_exists: `to` holds other accounts (exactly
// these rows, from a migrate that stopped after committing them, is success: nothing is written).
Result<std::size_t> copy_credentials(const std::filesystem::path& from, std::string_view to,
                                     const Secret& to_password, const MasterKey& key);

}  // namespace iop::storage
