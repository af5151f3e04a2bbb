#include "storage/credentials_store.hpp"

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "storage/database.hpp"
#include "storage/key_check.hpp"
#include "storage/sqlite.hpp"

namespace iop::storage {

namespace {

using sqlite::Database;
using sqlite::Statement;
using sqlite::Transaction;

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

// One row of mail_credentials as the program reads it: secrets still sealed, NULL read as an
// empty string or 0 (the store writes every absent value as NULL, and reads NULL and '' alike).
struct StoredRow {
  std::string email;
  bool use_oauth = true;
  std::string access_token;   // sealed; empty: NULL
  std::string refresh_token;  // sealed
  std::int64_t token_expiry = 0;
  std::int64_t refreshed_at_ms = 0;
  std::string password;  // sealed
  std::string local_password_hash;
  std::string upstream_host;
  std::int64_t upstream_port = 0;
  std::string status = "active";
  std::string status_reason;
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
  std::string provider = "default";
  std::string tenant;
  std::string client_id;
  std::string client_secret;       // sealed
  std::string client_certificate;  // sealed
  std::string signed_in_as;
  std::optional<std::string> row_mac;  // nullopt: NULL
};

// Every column, in the order read_row expects.
constexpr std::string_view select_rows =
    "SELECT email, use_oauth, access_token, refresh_token, token_expiry, refreshed_at_ms, "
    "password, local_password_hash, upstream_host, upstream_port, status, status_reason, "
    "created_at, updated_at, provider, tenant, client_id, client_secret, client_certificate, "
    "signed_in_as, row_mac FROM mail_credentials";

StoredRow read_row(const Statement& stmt) {
  StoredRow r;
  r.email = stmt.column_text(0);
  r.use_oauth = stmt.column_int64(1) != 0;
  r.access_token = stmt.column_blob(2);
  r.refresh_token = stmt.column_blob(3);
  r.token_expiry = stmt.column_int64(4);
  r.refreshed_at_ms = stmt.column_int64(5);
  r.password = stmt.column_blob(6);
  r.local_password_hash = stmt.column_text(7);
  r.upstream_host = stmt.column_text(8);
  r.upstream_port = stmt.column_int64(9);
  r.status = stmt.column_text(10);
  r.status_reason = stmt.column_text(11);
  r.created_at = stmt.column_int64(12);
  r.updated_at = stmt.column_int64(13);
  r.provider = stmt.column_text(14);
  r.tenant = stmt.column_text(15);
  r.client_id = stmt.column_text(16);
  r.client_secret = stmt.column_blob(17);
  r.client_certificate = stmt.column_blob(18);
  r.signed_in_as = stmt.column_text(19);
  if (!stmt.column_is_null(20)) {
    r.row_mac = stmt.column_blob(20);
  }
  return r;
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
  Impl(Database database, MasterKey master_key)
      : db(std::move(database)),
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

  // The row of `email`, or nullopt when there is none.
  Result<std::optional<StoredRow>> load_row(std::string_view email) {
    // Prepared once: every login reads its account, and preparing this statement took longer
    // (0.15 ms) than running it.
    if (!by_email) {
      IOP_TRY_ASSIGN(auto stmt, db.prepare(std::string(select_rows) + " WHERE email = ?1"));
      by_email.emplace(std::move(stmt));
    }
    Statement& stmt = *by_email;
    // Reset on every path: a statement left on its row would hold its read transaction open.
    struct Reset {
      Statement& stmt;
      ~Reset() { stmt.reset(); }
    } reset{stmt};
    IOP_TRY(stmt.bind_text(1, email));
    IOP_TRY_ASSIGN(auto step, stmt.step());
    if (step != Statement::Step::row) {
      return std::nullopt;
    }
    return read_row(stmt);
  }

  // Every row, by email.
  Result<std::vector<StoredRow>> load_rows() {
    IOP_TRY_ASSIGN(auto stmt, db.prepare(std::string(select_rows) + " ORDER BY email"));
    std::vector<StoredRow> rows;
    for (;;) {
      IOP_TRY_ASSIGN(auto step, stmt.step());
      if (step == Statement::Step::done) {
        return rows;
      }
      rows.push_back(read_row(stmt));
    }
  }

  // Writes `row` with a MAC computed here from exactly the values bound, so no write path can
  // store a row whose MAC does not match. `exists`: UPDATE the row, else INSERT it. Callers hold
  // an IMMEDIATE transaction from reading the row to this write, and have checked the old row's
  // MAC first: re-MACing a row that did not verify would bless whatever an attacker put in it.
  Result<void> write_row(StoredRow& row, bool exists) {
    row.row_mac = row_mac(row);
    const char* const sql =
        exists ? "UPDATE mail_credentials SET use_oauth = ?2, access_token = ?3, "
                 "refresh_token = ?4, token_expiry = ?5, refreshed_at_ms = ?6, password = ?7, "
                 "local_password_hash = ?8, upstream_host = ?9, upstream_port = ?10, "
                 "status = ?11, status_reason = ?12, created_at = ?13, updated_at = ?14, "
                 "provider = ?15, tenant = ?16, client_id = ?17, client_secret = ?18, "
                 "client_certificate = ?19, signed_in_as = ?20, row_mac = ?21 WHERE email = ?1"
               : "INSERT INTO mail_credentials (email, use_oauth, access_token, refresh_token, "
                 "token_expiry, refreshed_at_ms, password, local_password_hash, upstream_host, "
                 "upstream_port, status, status_reason, created_at, updated_at, provider, tenant, "
                 "client_id, client_secret, client_certificate, signed_in_as, row_mac) VALUES "
                 "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                 "?18, ?19, ?20, ?21)";
    IOP_TRY_ASSIGN(auto stmt, db.prepare(sql));
    // Absent values are NULL, as they always were; reading gives them back as empty.
    auto text = [&stmt](int index, const std::string& value) {
      return value.empty() ? stmt.bind_null(index) : stmt.bind_text(index, value);
    };
    auto blob = [&stmt](int index, const std::string& value) {
      return value.empty() ? stmt.bind_null(index) : stmt.bind_blob(index, value);
    };
    IOP_TRY(stmt.bind_text(1, row.email));
    IOP_TRY(stmt.bind_int64(2, row.use_oauth ? 1 : 0));
    IOP_TRY(blob(3, row.access_token));
    IOP_TRY(blob(4, row.refresh_token));
    IOP_TRY(stmt.bind_int64(5, row.token_expiry));
    IOP_TRY(stmt.bind_int64(6, row.refreshed_at_ms));
    IOP_TRY(blob(7, row.password));
    IOP_TRY(text(8, row.local_password_hash));
    IOP_TRY(text(9, row.upstream_host));
    IOP_TRY(stmt.bind_int64(10, row.upstream_port));
    IOP_TRY(stmt.bind_text(11, row.status));
    IOP_TRY(text(12, row.status_reason));
    IOP_TRY(stmt.bind_int64(13, row.created_at));
    IOP_TRY(stmt.bind_int64(14, row.updated_at));
    IOP_TRY(stmt.bind_text(15, row.provider));
    IOP_TRY(text(16, row.tenant));
    IOP_TRY(text(17, row.client_id));
    IOP_TRY(blob(18, row.client_secret));
    IOP_TRY(blob(19, row.client_certificate));
    IOP_TRY(text(20, row.signed_in_as));
    IOP_TRY(stmt.bind_blob(21, *row.row_mac));
    IOP_TRY(stmt.step());
    if (db.changes() != 1) {
      return fail(Errc::internal, "write of account " + row.email + " changed " +
                                      std::to_string(db.changes()) + " rows");
    }
    return {};
  }

  // Checks the key (Errc::key_error when it is not this database's) and, for a database from
  // schema v3 or earlier, gives every row its MAC, in one IMMEDIATE transaction.
  Result<void> check_key_and_backfill() {
    IOP_TRY_ASSIGN(auto tx, Transaction::begin(db));
    IOP_TRY_ASSIGN(const KeyCheck check, read_key_check(db, key));
    if (check == KeyCheck::absent) {
      // First open: remember which key this database belongs to. Any row already there was not
      // written by the store (it writes the key check before its first row), so it gets no MAC.
      // v3 at once: this version never writes a plain-hashed connection-log row, so nothing in a
      // new file is ever keyed after the fact (a deleted key check cannot reopen that door).
      IOP_TRY(write_key_check(db, key, KeyCheck::v3));
      return tx.commit();
    }
    if (check == KeyCheck::v1) {
      IOP_TRY(backfill_row_macs());
      IOP_TRY(write_key_check(db, key, KeyCheck::v2));
    }
    return tx.commit();
  }

  // The one place a NULL row MAC is filled in: a database whose sealed key check is still v1
  // (schema v3 and earlier, which had no MACs). The rows are trusted as they are at that moment,
  // as they were before. In the same transaction the key check becomes v2, so this never runs
  // again on this database; from then on a NULL MAC is a corrupt row (check_row).
  Result<void> backfill_row_macs() {
    IOP_TRY_ASSIGN(auto rows, load_rows());
    for (auto& row : rows) {
      if (row.row_mac) {
        continue;  // cannot happen before v2 except by an edit; left for check_row to judge
      }
      IOP_TRY_ASSIGN(auto stmt,
                     db.prepare("UPDATE mail_credentials SET row_mac = ?2 WHERE email = ?1"));
      IOP_TRY(stmt.bind_text(1, row.email));
      IOP_TRY(stmt.bind_blob(2, row_mac(row)));
      IOP_TRY(stmt.step());
    }
    return {};
  }

  std::mutex mu;  // one connection, used by one thread at a time
  Database db;
  MasterKey key;
  Secret mac_key;                     // derive_key(key, row_mac_label)
  std::optional<Statement> by_email;  // load_row's statement, prepared on first use (after db)
};

CredentialsStore::CredentialsStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CredentialsStore::~CredentialsStore() = default;

Result<std::unique_ptr<CredentialsStore>> CredentialsStore::open(const std::filesystem::path& path,
                                                                 MasterKey key) {
  // Durability::full: a refresh token the endpoint just rotated must survive a power failure.
  IOP_TRY_ASSIGN(auto db, open_database(path, Durability::full));
  auto impl = std::make_unique<Impl>(std::move(db), std::move(key));
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
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email));
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
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email));
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
}

Result<std::vector<AccountSummary>> CredentialsStore::list() {
  std::lock_guard lock(impl_->mu);
  // Decrypts nothing: listing works even for rows whose secrets are corrupt. Each row's MAC is
  // checked (one HMAC) so that a row whose settings were changed outside the program is flagged.
  IOP_TRY_ASSIGN(auto rows, impl_->load_rows());
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
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto tx, Transaction::begin(impl_->db));
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(row.email));
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
  return tx.commit();
}

Result<bool> CredentialsStore::update_tokens(std::string_view email, const TokenUpdate& update) {
  std::lock_guard lock(impl_->mu);
  // IMMEDIATE: the write lock is held from the read of refreshed_at_ms (and the MAC check) to the
  // write, so another process cannot commit a newer refresh, or change the row, in between.
  IOP_TRY_ASSIGN(auto tx, Transaction::begin(impl_->db));
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email));
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
  IOP_TRY(tx.commit());
  return true;
}

Result<void> CredentialsStore::mark_needs_reauth(std::string_view email, std::string_view reason) {
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto tx, Transaction::begin(impl_->db));
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email));
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
  return tx.commit();
}

Result<void> CredentialsStore::set_local_password_hash(std::string_view email,
                                                       std::string_view hash) {
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto tx, Transaction::begin(impl_->db));
  IOP_TRY_ASSIGN(auto loaded, impl_->load_row(email));
  if (!loaded) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  StoredRow& row = *loaded;
  IOP_TRY(impl_->check_row(row));
  // Empty clears the local password (stored as NULL, like the other absent values).
  row.local_password_hash = std::string(hash);
  row.updated_at = now_seconds();
  IOP_TRY(impl_->write_row(row, true));
  return tx.commit();
}

Result<bool> CredentialsStore::remove(std::string_view email) {
  std::lock_guard lock(impl_->mu);
  IOP_TRY_ASSIGN(auto stmt, impl_->db.prepare("DELETE FROM mail_credentials WHERE email = ?1"));
  IOP_TRY(stmt.bind_text(1, email));
  IOP_TRY(stmt.step());
  return impl_->db.changes() > 0;
}

}  // namespace iop::storage

#undef IOP_TRY
