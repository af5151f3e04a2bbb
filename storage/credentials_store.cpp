#include "storage/credentials_store.hpp"

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/database_url.hpp"
#include "storage/credential_rows.hpp"
#include "storage/key_check.hpp"

namespace iop::storage {

namespace {

// Sealed into meta on first open; decrypting it on later opens proves the key is the one the
// secrets were written with, before any account read fails confusingly. Its plaintext also
// records whether every row carries a row MAC: v1 was written by schema v3 and earlier (rows have
// none yet), v2 once the MACs exist. Only a sealed value can say so: an attacker without the key
// can delete or copy rows, user_version or a plain meta flag, but cannot make a v2 into a v1, so
// they cannot make open() fill in a MAC for a row they edited (see backfill_row_macs).

// The row MAC (issue #7). Its key is derived from the master key under this label, so it is
// independent of the AES-GCM key and of any other subkey.
constexpr std::string_view row_mac_label = "imap-oauth2-proxy mail_credentials row mac v1";
// The first field of every MAC input: the format (the row version). A later format that covers
// more columns changes this, so an input of one format can never be read as another.
constexpr std::string_view row_mac_format = "mail_credentials row v1";

constexpr std::string_view column_access_token = "access_token";
constexpr std::string_view column_refresh_token = "refresh_token";
constexpr std::string_view column_password = "password";
constexpr std::string_view column_client_secret = "client_secret";
constexpr std::string_view column_client_certificate = "client_certificate";

// Binds a sealed value to its row and column: a ciphertext copied into another account or
// another column then fails authentication. Emails cannot contain NUL, so the split is unique.
std::string secret_aad(std::string_view email, std::string_view column) {
  std::string aad;
  aad.reserve(email.size() + 1 + column.size());
  aad.append(email);
  aad.push_back('\0');
  aad.append(column);
  return aad;
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::optional<AccountStatus> parse_status(std::string_view text) {
  if (text == "active") {
    return AccountStatus::active;
  }
  if (text == "needs_reauth") {
    return AccountStatus::needs_reauth;
  }
  return std::nullopt;
}

// Appends one length-prefixed field: its length as 8 bytes big-endian, then its bytes. Every
// field has its length in front, so no two different rows encode to the same bytes (a value
// cannot spill into the next one, whatever bytes it holds).
void append_field(std::string& out, std::string_view value) {
  const auto size = static_cast<std::uint64_t>(value.size());
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((size >> shift) & 0xff));
  }
  out.append(value);
}

// An integer is a field of 8 bytes, big-endian two's complement.
void append_int(std::string& out, std::int64_t value) {
  const auto bits = static_cast<std::uint64_t>(value);
  std::string bytes;
  for (int shift = 56; shift >= 0; shift -= 8) {
    bytes.push_back(static_cast<char>((bits >> shift) & 0xff));
  }
  append_field(out, bytes);
}

// What the row MAC authenticates: every column that decides where a secret goes or who may use
// it, as the program interprets it, plus the sealed secrets themselves (so a secret cannot be
// removed or put back from an older copy of the row alone). Left out, because they decide
// nothing about where a secret goes: status_reason (text for the operator), token_expiry and
// refreshed_at_ms (an edit can only cause a refresh, or skip a write: a denial of service,
// which write access to the file always allows), created_at and updated_at.
std::string row_mac_input(const StoredRow& r) {
  std::string out;
  append_field(out, row_mac_format);
  append_field(out, r.email);
  append_int(out, r.use_oauth ? 1 : 0);
  append_field(out, r.status);
  append_field(out, r.local_password_hash);
  append_field(out, r.upstream_host);
  append_int(out, r.upstream_port);
  append_field(out, r.provider);
  append_field(out, r.tenant);
  append_field(out, r.client_id);
  append_field(out, r.signed_in_as);
  append_field(out, r.access_token);
  append_field(out, r.refresh_token);
  append_field(out, r.password);
  append_field(out, r.client_secret);
  append_field(out, r.client_certificate);
  return out;
}

// How long a login may be checked against a record read before the database went away.
constexpr auto max_stale_login = std::chrono::minutes(15);

// The operator's next step for a row that fails its MAC. Removing first matters: adding again
// over a row whose settings are not trusted must not carry any of them over.
std::string untrusted_row_message(std::string_view email, std::string_view what) {
  const std::string e(email);
  return "account " + e + " " + std::string(what) +
         ", so none of its settings (upstream, provider, status, local password) are used: "
         "remove it ('imap-oauth2-proxy account remove " +
         e + "') and add it again";
}

}  // namespace

std::string_view to_string(AccountStatus status) {
  switch (status) {
    case AccountStatus::active:
      return "active";
    case AccountStatus::needs_reauth:
      return "needs_reauth";
  }
  return "active";
}

struct CredentialsStore::Impl {
  Impl(std::unique_ptr<CredentialRows> table, MasterKey master_key)
      : rows(std::move(table)),
        key(std::move(master_key)),
        mac_key(derive_key(key, row_mac_label)) {}

  // Seals `value` for (email, column); an empty value stays empty (stored as NULL).
  [[nodiscard]] std::string seal_for(std::string_view email, std::string_view column,
                                     const Secret& value) const {
    return value.empty() ? std::string() : seal(key, value, secret_aad(email, column));
  }

  // Opens a sealed value of `email`'s `column`; empty (NULL) is an empty secret.
  Result<Secret> open_secret(const std::string& blob, std::string_view email,
                             std::string_view column) const {
    if (blob.empty()) {
      return Secret();
    }
    auto plain = open_sealed(key, blob, secret_aad(email, column));
    if (!plain) {
      // Name the account and column so an operator knows what to re-add; never the bytes.
      return fail(Errc::credentials_corrupt,
                  "stored " + std::string(column) + " of account " + std::string(email) +
                      " does not decrypt (altered, or copied from another row): add the "
                      "account again");
    }
    return plain;
  }

  [[nodiscard]] std::string row_mac(const StoredRow& row) const {
    return hmac_sha256(mac_key, row_mac_input(row));
  }

  [[nodiscard]] bool verifies(const StoredRow& row) const {
    return row.row_mac.has_value() && mac_equal(*row.row_mac, row_mac(row));
  }

  // Errc::credentials_corrupt unless the row's MAC verifies. A NULL MAC is never filled in here:
  // only open() does that, once, when the database comes from schema v3 (backfill_row_macs).
  Result<void> check_row(const StoredRow& row) const {
    if (!row.row_mac) {
      return fail(Errc::credentials_corrupt,
                  untrusted_row_message(row.email,
                                        "has no row MAC (it was written outside "
                                        "imap-oauth2-proxy)"));
    }
    if (!verifies(row)) {
      return fail(Errc::credentials_corrupt,
                  untrusted_row_message(row.email,
                                        "does not match its row MAC (changed outside "
                                        "imap-oauth2-proxy, or copied from another account)"));
    }
    return {};
  }

  // The committed row of `email` for a reader (get, login_record): on PostgreSQL from the pool,
  // without the store's mutex, so logins read in parallel and never wait behind a write
  // transaction (a refresh's commit, an account command); on SQLite under the mutex.
  Result<std::optional<StoredRow>> read_row(std::string_view email) {
    if (rows->concurrent_reads()) {
      return rows->load_row(email, false);
    }
    std::lock_guard lock(mu);
    return rows->load_row(email, false);
  }

  // The row of `email`, or nullopt when there is none. `for_update`: locked until the write
  // transaction ends.
  Result<std::optional<StoredRow>> load_row(std::string_view email, bool for_update = false) {
    return rows->load_row(email, for_update);
  }

  // Writes `row` with a MAC computed here from exactly the values bound, so no write path can
  // store a row whose MAC does not match. `exists`: UPDATE the row, else INSERT it. Callers hold
  // an IMMEDIATE transaction from reading the row to this write, and have checked the old row's
  // MAC first: re-MACing a row that did not verify would bless whatever an attacker put in it.
  Result<void> write_row(StoredRow& row, bool exists) {
    row.row_mac = row_mac(row);
    return rows->write_row(row, exists);
  }

  // Checks the key (Errc::key_error when it is not this database's) and, for a database from
  // schema v3 or earlier, gives every row its MAC, in one IMMEDIATE transaction.
  Result<void> check_key_and_backfill() {
    IOP_TRY_ASSIGN(auto tx, rows->begin_write());
    IOP_TRY_ASSIGN(const KeyCheck check, rows->read_key_check(key));
    if (check == KeyCheck::absent) {
      // First open: remember which key this database belongs to. Any row already there was not
      // written by the store (it writes the key check before its first row), so it gets no MAC.
      // v3 at once: this version never writes a plain-hashed connection-log row, so nothing in a
      // new file is ever keyed after the fact (a deleted key check cannot reopen that door).
      IOP_TRY(rows->write_key_check(key, KeyCheck::v3));
      return tx->commit();
    }
    if (check == KeyCheck::v1) {
      IOP_TRY(backfill_row_macs());
      IOP_TRY(rows->write_key_check(key, KeyCheck::v2));
    }
    return tx->commit();
  }

  // The one place a NULL row MAC is filled in: a database whose sealed key check is still v1
  // (schema v3 and earlier, which had no MACs). The rows are trusted as they are at that moment,
  // as they were before. In the same transaction the key check becomes v2, so this never runs
  // again on this database; from then on a NULL MAC is a corrupt row (check_row).
  Result<void> backfill_row_macs() {
    IOP_TRY_ASSIGN(auto all, rows->load_rows());
    for (auto& row : all) {
      if (row.row_mac) {
        continue;  // cannot happen before v2 except by an edit; left for check_row to judge
      }
      IOP_TRY(rows->set_row_mac(row.email, row_mac(row)));
    }
    return {};
  }

  std::mutex mu;  // one connection, used by one thread at a time
  std::unique_ptr<CredentialRows> rows;
  MasterKey key;
  Secret mac_key;  // derive_key(key, row_mac_label)
  // login_record's last answer per account, for when the database cannot be reached. Holds no
  // secret (a password hash, the upstream); one entry per account that logged in.
  struct LastLogin {
    LoginRecord record;
    std::chrono::steady_clock::time_point read_at;
  };
  std::mutex last_mu;  // guards the two below (login_record runs without `mu` on PostgreSQL)
  std::unordered_map<std::string, LastLogin> last_login_records;
  // Counts local changes to what a login reads. A login_record whose read began before a change
  // committed keeps nothing: on PostgreSQL reads run in parallel with writes, and the read may
  // have seen the row from before the change.
  std::uint64_t login_changes = 0;

  // Allocates nothing (ForgetLogin calls it from its destructor).
  void forget_login(const std::string& email) noexcept {
    std::lock_guard lock(last_mu);
    last_login_records.erase(email);
    ++login_changes;
  }
};

namespace {

// Forgets `email`'s last login record when the change it guards starts and again once it has
// committed or failed (declared before the transaction, it ends after it).
class ForgetLogin {
 public:
  ForgetLogin(CredentialsStore::Impl& impl, std::string_view email) : impl_(impl), email_(email) {
    impl_.forget_login(email_);
  }
  ~ForgetLogin() { impl_.forget_login(email_); }
  ForgetLogin(const ForgetLogin&) = delete;
  ForgetLogin& operator=(const ForgetLogin&) = delete;

 private:
  CredentialsStore::Impl& impl_;
  std::string email_;
};

}  // namespace

CredentialsStore::CredentialsStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CredentialsStore::~CredentialsStore() = default;

Result<std::unique_ptr<CredentialsStore>> CredentialsStore::open(const std::filesystem::path& path,
                                                                 MasterKey key) {
  IOP_TRY_ASSIGN(auto rows, open_sqlite_rows(path));
  return open_rows(std::move(rows), std::move(key));
}

Result<std::unique_ptr<CredentialsStore>> CredentialsStore::open(std::string_view database,
                                                                 const Secret& database_password,
                                                                 MasterKey key) {
  if (is_postgres_url(database)) {
    IOP_TRY_ASSIGN(auto rows, open_pg_rows(database, database_password));
    return open_rows(std::move(rows), std::move(key));
  }
  return open(std::filesystem::path(database), std::move(key));
}

Result<std::unique_ptr<CredentialsStore>> CredentialsStore::open_rows(
    std::unique_ptr<CredentialRows> rows, MasterKey key) {
  auto impl = std::make_unique<Impl>(std::move(rows), std::move(key));
  // Migrations run without the key (open_database), so the MACs of rows from schema v3 are
  // computed here, after the key is known to be right.
  IOP_TRY(impl->check_key_and_backfill());
  return std::unique_ptr<CredentialsStore>(new CredentialsStore(std::move(impl)));
}

namespace {

Result<void> check_port(const StoredRow& stored) {
  if (stored.upstream_port < 0 || stored.upstream_port > 65535) {
    return fail(Errc::credentials_corrupt, "account " + stored.email +
                                               " has an invalid upstream_port " +
                                               std::to_string(stored.upstream_port));
  }
  return {};
}

}  // namespace

Result<Credentials> CredentialsStore::get(std::string_view email) {
  IOP_TRY_ASSIGN(auto loaded, impl_->read_row(email));
  if (!loaded) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  const StoredRow& stored = *loaded;

  Credentials row;
  row.email = stored.email;
  // Secrets first: a ciphertext moved from another row or column is reported by name. Opening
  // before the MAC check is safe: AES-GCM authenticates each one on its own.
  IOP_TRY_ASSIGN(row.access_token,
                 impl_->open_secret(stored.access_token, row.email, column_access_token));
  IOP_TRY_ASSIGN(row.refresh_token,
                 impl_->open_secret(stored.refresh_token, row.email, column_refresh_token));
  IOP_TRY_ASSIGN(row.password, impl_->open_secret(stored.password, row.email, column_password));
  IOP_TRY_ASSIGN(row.client_secret,
                 impl_->open_secret(stored.client_secret, row.email, column_client_secret));
  IOP_TRY_ASSIGN(row.client_certificate, impl_->open_secret(stored.client_certificate, row.email,
                                                            column_client_certificate));
  // Then the columns that say where those secrets go and who may use them.
  IOP_TRY(impl_->check_row(stored));

  IOP_TRY(check_port(stored));
  auto status = parse_status(stored.status);
  if (!status) {
    return fail(Errc::credentials_corrupt, "account " + row.email + " has an invalid status");
  }
  row.use_oauth = stored.use_oauth;
  row.token_expiry = stored.token_expiry;
  row.refreshed_at_ms = stored.refreshed_at_ms;
  row.local_password_hash = stored.local_password_hash;
  row.upstream_host = stored.upstream_host;
  row.upstream_port = static_cast<int>(stored.upstream_port);
  row.status = *status;
  row.status_reason = stored.status_reason;
  row.created_at = stored.created_at;
  row.updated_at = stored.updated_at;
  row.provider = stored.provider;
  row.tenant = stored.tenant;
  row.client_id = stored.client_id;
  row.signed_in_as = stored.signed_in_as;
  return row;
}

Result<LoginRecord> CredentialsStore::login_record(std::string_view email) {
  auto read = [&]() -> Result<LoginRecord> {
    IOP_TRY_ASSIGN(auto loaded, impl_->read_row(email));
    if (!loaded) {
      return fail(Errc::not_found, "no account " + std::string(email));
    }
    const StoredRow& stored = *loaded;
    IOP_TRY(impl_->check_row(stored));
    IOP_TRY(check_port(stored));
    LoginRecord out;
    out.email = stored.email;
    out.local_password_hash = stored.local_password_hash;
    out.upstream_host = stored.upstream_host;
    out.upstream_port = static_cast<int>(stored.upstream_port);
    out.provider = stored.provider;
    return out;
  };
  std::uint64_t changes = 0;
  {
    std::lock_guard lock(impl_->last_mu);
    changes = impl_->login_changes;
  }
  auto record = read();
  const std::string key(email);
  std::lock_guard lock(impl_->last_mu);
  auto& last = impl_->last_login_records;
  if (record && impl_->login_changes == changes) {
    last.insert_or_assign(key, Impl::LastLogin{*record, std::chrono::steady_clock::now()});
  } else if (record) {
    last.erase(key);  // read while a change committed: maybe from before it
  } else if (record.error().code == Errc::storage_unavailable && !impl_->rows->connected()) {
    // Stale if unreachable, never stale if answered: an error the server sent (permissions, a
    // missing table) or a removed or corrupt account is not covered up, and any answer replaces
    // or drops the copy. Never older than max_stale_login: a password changed elsewhere just
    // before an outage stops working after that at the latest.
    if (auto it = last.find(key);
        it != last.end() &&
        std::chrono::steady_clock::now() - it->second.read_at < max_stale_login) {
      LoginRecord stale = it->second.record;
      stale.from_memory = true;
      return stale;
    }
  } else {
    last.erase(key);
  }
  return record;
}

Result<std::vector<AccountSummary>> CredentialsStore::list() {
  std::lock_guard lock(impl_->mu);
  // Decrypts nothing: listing works even for rows whose secrets are corrupt. Each row's MAC is
  // checked (one HMAC) so that a row whose settings were changed outside the program is flagged.
  IOP_TRY_ASSIGN(auto rows, impl_->rows->load_rows());
  std::vector<AccountSummary> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    AccountSummary s;
    s.email = r.email;
    s.use_oauth = r.use_oauth;
    // The CHECK constraint keeps status valid; show an unknown one as needing attention.
    s.status = parse_status(r.status).value_or(AccountStatus::needs_reauth);
    s.status_reason = r.status_reason;
    s.token_expiry = r.token_expiry;
    s.refreshed_at_ms = r.refreshed_at_ms;
    s.has_local_password = !r.local_password_hash.empty();
    s.upstream_host = r.upstream_host;
    s.upstream_port = static_cast<int>(r.upstream_port);
    s.provider = r.provider;
    s.tenant = r.tenant;
    s.client_id = r.client_id;
    s.signed_in_as = r.signed_in_as;
    s.verified = impl_->verifies(r);
    out.push_back(std::move(s));
  }
  return out;
}

Result<void> CredentialsStore::upsert_account(const Credentials& row) {
  if (row.email.empty()) {
    return fail(Errc::invalid_argument, "account email is empty");
  }
  const ForgetLogin forget(*impl_, row.email);
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto tx, impl_->rows->begin_write());
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(row.email, true));
  const std::string& email = row.email;
  const std::int64_t now = now_seconds();
  StoredRow next;
  next.email = email;
  next.use_oauth = row.use_oauth;
  next.access_token = impl_->seal_for(email, column_access_token, row.access_token);
  next.refresh_token = impl_->seal_for(email, column_refresh_token, row.refresh_token);
  next.token_expiry = row.token_expiry;
  next.refreshed_at_ms = row.refreshed_at_ms;
  next.password = impl_->seal_for(email, column_password, row.password);
  next.upstream_host = row.upstream_host;
  next.upstream_port = row.upstream_port;
  next.status = std::string(to_string(AccountStatus::active));
  next.updated_at = now;
  next.provider = row.provider.empty() ? std::string("default") : row.provider;
  next.tenant = row.tenant;
  next.client_id = row.client_id;
  next.client_secret = impl_->seal_for(email, column_client_secret, row.client_secret);
  next.client_certificate =
      impl_->seal_for(email, column_client_certificate, row.client_certificate);
  next.signed_in_as = row.signed_in_as;
  const bool exists = loaded.has_value();
  if (exists && impl_->verifies(*loaded)) {
    // An existing account keeps its local password and creation time.
    next.local_password_hash = (loaded)->local_password_hash;
    next.created_at = (loaded)->created_at;
  } else {
    // A new account, or one whose row does not verify: nothing of the old row is trusted (its
    // local password hash may be an attacker's), so it is written as new. This is how
    // re-adding repairs a corrupt account.
    next.local_password_hash = row.local_password_hash;
    next.created_at = now;
  }
  IOP_TRY(impl_->write_row(next, exists));
  return tx->commit();
}

Result<bool> CredentialsStore::update_tokens(std::string_view email, const TokenUpdate& update) {
  std::lock_guard lock(impl_->mu);
  // IMMEDIATE: the write lock is held from the read of refreshed_at_ms (and the MAC check) to the
  // write, so another process cannot commit a newer refresh, or change the row, in between.
  IOP_TRY_ASSIGN(auto tx, impl_->rows->begin_write());
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email, true));
  if (!loaded) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  StoredRow& row = *loaded;
  if (row.refreshed_at_ms >= update.refreshed_at_ms) {
    // A late or retried refresh: the stored tokens are as new or newer. Overwriting would
    // resurrect a refresh token the endpoint may already have rotated away.
    return false;  // the Transaction rolls back; nothing was written
  }
  // This write makes the account active: it must not turn an attacker's needs_reauth -> active
  // edit, or any other edit, into a row with a valid MAC.
  IOP_TRY(impl_->check_row(row));
  row.access_token = impl_->seal_for(row.email, column_access_token, update.access_token);
  if (update.refresh_token) {
    row.refresh_token = impl_->seal_for(row.email, column_refresh_token, *update.refresh_token);
  }
  row.token_expiry = update.token_expiry;
  row.refreshed_at_ms = update.refreshed_at_ms;
  row.status = std::string(to_string(AccountStatus::active));
  row.status_reason.clear();
  row.updated_at = now_seconds();
  IOP_TRY(impl_->write_row(row, true));
  IOP_TRY(tx->commit());
  return true;
}

Result<void> CredentialsStore::mark_needs_reauth(std::string_view email, std::string_view reason) {
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto tx, impl_->rows->begin_write());
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email, true));
  if (!loaded) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  StoredRow& row = *loaded;
  IOP_TRY(impl_->check_row(row));
  // Secrets stay: an operator may fix the cause (consent, conditional access) and the stored
  // refresh token can then work again without a new authorization.
  row.status = std::string(to_string(AccountStatus::needs_reauth));
  row.status_reason = std::string(reason);
  row.updated_at = now_seconds();
  IOP_TRY(impl_->write_row(row, true));
  return tx->commit();
}

Result<void> CredentialsStore::set_local_password_hash(std::string_view email,
                                                       std::string_view hash) {
  const ForgetLogin forget(*impl_, email);
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto tx, impl_->rows->begin_write());
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email, true));
  if (!loaded) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  StoredRow& row = *loaded;
  IOP_TRY(impl_->check_row(row));
  // Empty clears the local password (stored as NULL, like the other absent values).
  row.local_password_hash = std::string(hash);
  row.updated_at = now_seconds();
  IOP_TRY(impl_->write_row(row, true));
  return tx->commit();
}

Result<RefreshLockAttempt> CredentialsStore::try_refresh_lock(std::string_view email) {
  return impl_->rows->try_refresh_lock(email);
}

Result<bool> CredentialsStore::remove(std::string_view email) {
  const ForgetLogin forget(*impl_, email);
  std::lock_guard lock(impl_->mu);
  return impl_->rows->remove(email);
}

}  // namespace iop::storage

#undef IOP_TRY
