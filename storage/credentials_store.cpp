#include "storage/credentials_store.hpp"

#include <chrono>
#include <mutex>

#include "storage/database.hpp"
#include "storage/sqlite.hpp"

namespace iop::storage {

namespace {

using sqlite::Database;
using sqlite::Statement;
using sqlite::Transaction;

// Sealed into meta on first open; decrypting it on later opens proves the key is the one the
// secrets were written with, before any account read fails confusingly.
constexpr std::string_view key_check_name = "key_check";
constexpr std::string_view key_check_aad = "meta:key_check";
constexpr std::string_view key_check_plaintext = "imap-oauth2-proxy master key check v1";

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

Result<void> check_key(Database& db, const MasterKey& key) {
  auto tx = Transaction::begin(db);
  if (!tx) {
    return std::unexpected(tx.error());
  }
  auto select = db.prepare("SELECT value FROM meta WHERE key = ?1");
  if (!select) {
    return std::unexpected(select.error());
  }
  IOP_TRY(select->bind_text(1, key_check_name));
  auto step = select->step();
  if (!step) {
    return std::unexpected(step.error());
  }
  if (*step == Statement::Step::row) {
    auto plain = open_sealed(key, select->column_blob(0), key_check_aad);
    if (!plain || plain->reveal() != key_check_plaintext) {
      select->reset();
      return fail(Errc::key_error, "the master key does not match the database " + db.path() +
                                       ": use the key file this database was created with");
    }
    select->reset();
    return tx->commit();
  }
  // First open: remember which key this database belongs to.
  auto insert = db.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)");
  if (!insert) {
    return std::unexpected(insert.error());
  }
  IOP_TRY(insert->bind_text(1, key_check_name));
  IOP_TRY(insert->bind_blob(2, seal(key, Secret(key_check_plaintext), key_check_aad)));
  auto done = insert->step();
  if (!done) {
    return std::unexpected(done.error());
  }
  return tx->commit();
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
      : db(std::move(database)), key(std::move(master_key)) {}

  // Seals `value` for (email, column), or binds NULL when it is empty.
  Result<void> bind_secret(Statement& stmt, int index, std::string_view email,
                           std::string_view column, const Secret& value) const {
    if (value.empty()) {
      return stmt.bind_null(index);
    }
    return stmt.bind_blob(index, seal(key, value, secret_aad(email, column)));
  }

  // Opens column `col` of the current row; NULL is an empty secret.
  Result<Secret> read_secret(const Statement& stmt, int col, std::string_view email,
                             std::string_view column) const {
    if (stmt.column_is_null(col)) {
      return Secret();
    }
    auto plain = open_sealed(key, stmt.column_blob(col), secret_aad(email, column));
    if (!plain) {
      // Name the account and column so an operator knows what to re-add; never the bytes.
      return fail(Errc::credentials_corrupt,
                  "stored " + std::string(column) + " of account " + std::string(email) +
                      " does not decrypt (altered, or copied from another row): add the "
                      "account again");
    }
    return plain;
  }

  std::mutex mu;  // one connection, used by one thread at a time
  Database db;
  MasterKey key;
};

CredentialsStore::CredentialsStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CredentialsStore::~CredentialsStore() = default;

Result<std::unique_ptr<CredentialsStore>> CredentialsStore::open(const std::filesystem::path& path,
                                                                 MasterKey key) {
  // Durability::full: a refresh token the endpoint just rotated must survive a power failure.
  auto db = open_database(path, Durability::full);
  if (!db) {
    return std::unexpected(db.error());
  }
  IOP_TRY(check_key(*db, key));
  return std::unique_ptr<CredentialsStore>(
      new CredentialsStore(std::make_unique<Impl>(std::move(*db), std::move(key))));
}

Result<Credentials> CredentialsStore::get(std::string_view email) {
  std::lock_guard lock(impl_->mu);
  auto stmt = impl_->db.prepare(
      "SELECT email, use_oauth, access_token, refresh_token, token_expiry, refreshed_at_ms, "
      "password, local_password_hash, upstream_host, upstream_port, status, status_reason, "
      "created_at, updated_at, provider, tenant, client_id, client_secret, client_certificate, "
      "signed_in_as FROM mail_credentials WHERE email = ?1");
  if (!stmt) {
    return std::unexpected(stmt.error());
  }
  IOP_TRY(stmt->bind_text(1, email));
  auto step = stmt->step();
  if (!step) {
    return std::unexpected(step.error());
  }
  if (*step != Statement::Step::row) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }

  Credentials row;
  row.email = stmt->column_text(0);
  row.use_oauth = stmt->column_int64(1) != 0;
  auto access = impl_->read_secret(*stmt, 2, row.email, column_access_token);
  if (!access) {
    return std::unexpected(access.error());
  }
  row.access_token = std::move(*access);
  auto refresh = impl_->read_secret(*stmt, 3, row.email, column_refresh_token);
  if (!refresh) {
    return std::unexpected(refresh.error());
  }
  row.refresh_token = std::move(*refresh);
  row.token_expiry = stmt->column_int64(4);
  row.refreshed_at_ms = stmt->column_int64(5);
  auto password = impl_->read_secret(*stmt, 6, row.email, column_password);
  if (!password) {
    return std::unexpected(password.error());
  }
  row.password = std::move(*password);
  row.local_password_hash = stmt->column_text(7);
  row.upstream_host = stmt->column_text(8);
  auto port = stmt->column_int64(9);
  if (port < 0 || port > 65535) {
    return fail(Errc::credentials_corrupt,
                "account " + row.email + " has an invalid upstream_port " + std::to_string(port));
  }
  row.upstream_port = static_cast<int>(port);
  auto status = parse_status(stmt->column_text(10));
  if (!status) {
    return fail(Errc::credentials_corrupt, "account " + row.email + " has an invalid status");
  }
  row.status = *status;
  row.status_reason = stmt->column_text(11);
  row.created_at = stmt->column_int64(12);
  row.updated_at = stmt->column_int64(13);
  row.provider = stmt->column_text(14);
  row.tenant = stmt->column_text(15);
  row.client_id = stmt->column_text(16);
  auto client_secret = impl_->read_secret(*stmt, 17, row.email, column_client_secret);
  if (!client_secret) {
    return std::unexpected(client_secret.error());
  }
  row.client_secret = std::move(*client_secret);
  auto certificate = impl_->read_secret(*stmt, 18, row.email, column_client_certificate);
  if (!certificate) {
    return std::unexpected(certificate.error());
  }
  row.client_certificate = std::move(*certificate);
  row.signed_in_as = stmt->column_text(19);
  return row;
}

Result<std::vector<AccountSummary>> CredentialsStore::list() {
  std::lock_guard lock(impl_->mu);
  // Selects no secret column: listing works even for rows whose secrets are corrupt.
  auto stmt = impl_->db.prepare(
      "SELECT email, use_oauth, status, status_reason, token_expiry, refreshed_at_ms, "
      "local_password_hash IS NOT NULL AND local_password_hash <> '', upstream_host, "
      "upstream_port, provider, tenant, client_id, signed_in_as FROM mail_credentials "
      "ORDER BY email");
  if (!stmt) {
    return std::unexpected(stmt.error());
  }
  std::vector<AccountSummary> out;
  for (;;) {
    auto step = stmt->step();
    if (!step) {
      return std::unexpected(step.error());
    }
    if (*step == Statement::Step::done) {
      break;
    }
    AccountSummary s;
    s.email = stmt->column_text(0);
    s.use_oauth = stmt->column_int64(1) != 0;
    // The CHECK constraint keeps status valid; show an unknown one as needing attention.
    s.status = parse_status(stmt->column_text(2)).value_or(AccountStatus::needs_reauth);
    s.status_reason = stmt->column_text(3);
    s.token_expiry = stmt->column_int64(4);
    s.refreshed_at_ms = stmt->column_int64(5);
    s.has_local_password = stmt->column_int64(6) != 0;
    s.upstream_host = stmt->column_text(7);
    s.upstream_port = static_cast<int>(stmt->column_int64(8));
    s.provider = stmt->column_text(9);
    s.tenant = stmt->column_text(10);
    s.client_id = stmt->column_text(11);
    s.signed_in_as = stmt->column_text(12);
    out.push_back(std::move(s));
  }
  return out;
}

Result<void> CredentialsStore::upsert_account(const Credentials& row) {
  if (row.email.empty()) {
    return fail(Errc::invalid_argument, "account email is empty");
  }
  if (row.upstream_port < 0 || row.upstream_port > 65535) {
    return fail(Errc::invalid_argument,
                "upstream port " + std::to_string(row.upstream_port) + " is out of range");
  }
  std::lock_guard lock(impl_->mu);
  // On conflict, local_password_hash and created_at are deliberately not in the SET list:
  // re-adding an account (new consent, new password) must not lock its users out locally.
  auto stmt = impl_->db.prepare(
      "INSERT INTO mail_credentials (email, use_oauth, access_token, refresh_token, "
      "token_expiry, refreshed_at_ms, password, local_password_hash, upstream_host, "
      "upstream_port, status, status_reason, created_at, updated_at, provider, tenant, "
      "client_id, client_secret, client_certificate, signed_in_as) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'active', NULL, ?11, ?11, ?12, ?13, ?14, "
      "?15, ?16, ?17) "
      "ON CONFLICT (email) DO UPDATE SET use_oauth = excluded.use_oauth, "
      "access_token = excluded.access_token, refresh_token = excluded.refresh_token, "
      "token_expiry = excluded.token_expiry, refreshed_at_ms = excluded.refreshed_at_ms, "
      "password = excluded.password, upstream_host = excluded.upstream_host, "
      "upstream_port = excluded.upstream_port, status = 'active', status_reason = NULL, "
      "updated_at = excluded.updated_at, provider = excluded.provider, tenant = excluded.tenant, "
      "client_id = excluded.client_id, client_secret = excluded.client_secret, "
      "client_certificate = excluded.client_certificate, signed_in_as = excluded.signed_in_as");
  if (!stmt) {
    return std::unexpected(stmt.error());
  }
  const std::string& email = row.email;
  IOP_TRY(stmt->bind_text(1, email));
  IOP_TRY(stmt->bind_int64(2, row.use_oauth ? 1 : 0));
  IOP_TRY(impl_->bind_secret(*stmt, 3, email, column_access_token, row.access_token));
  IOP_TRY(impl_->bind_secret(*stmt, 4, email, column_refresh_token, row.refresh_token));
  IOP_TRY(stmt->bind_int64(5, row.token_expiry));
  IOP_TRY(stmt->bind_int64(6, row.refreshed_at_ms));
  IOP_TRY(impl_->bind_secret(*stmt, 7, email, column_password, row.password));
  IOP_TRY(row.local_password_hash.empty() ? stmt->bind_null(8)
                                          : stmt->bind_text(8, row.local_password_hash));
  IOP_TRY(row.upstream_host.empty() ? stmt->bind_null(9) : stmt->bind_text(9, row.upstream_host));
  IOP_TRY(stmt->bind_int64(10, row.upstream_port));
  IOP_TRY(stmt->bind_int64(11, now_seconds()));
  auto text_or_null = [&stmt](int index, const std::string& value) {
    return value.empty() ? stmt->bind_null(index) : stmt->bind_text(index, value);
  };
  IOP_TRY(stmt->bind_text(12, row.provider.empty() ? std::string("default") : row.provider));
  IOP_TRY(text_or_null(13, row.tenant));
  IOP_TRY(text_or_null(14, row.client_id));
  IOP_TRY(impl_->bind_secret(*stmt, 15, email, column_client_secret, row.client_secret));
  IOP_TRY(impl_->bind_secret(*stmt, 16, email, column_client_certificate, row.client_certificate));
  IOP_TRY(text_or_null(17, row.signed_in_as));
  auto step = stmt->step();
  if (!step) {
    return std::unexpected(step.error());
  }
  return {};
}

Result<bool> CredentialsStore::update_tokens(std::string_view email, const TokenUpdate& update) {
  std::lock_guard lock(impl_->mu);
  Database& db = impl_->db;
  // IMMEDIATE: the write lock is held from the read of refreshed_at_ms to the write, so another
  // process cannot commit a newer refresh in between.
  auto tx = Transaction::begin(db);
  if (!tx) {
    return std::unexpected(tx.error());
  }
  auto select = db.prepare("SELECT refreshed_at_ms FROM mail_credentials WHERE email = ?1");
  if (!select) {
    return std::unexpected(select.error());
  }
  IOP_TRY(select->bind_text(1, email));
  auto found = select->step();
  if (!found) {
    return std::unexpected(found.error());
  }
  if (*found != Statement::Step::row) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  const std::int64_t stored_at_ms = select->column_int64(0);
  select->reset();
  if (stored_at_ms >= update.refreshed_at_ms) {
    // A late or retried refresh: the stored tokens are as new or newer. Overwriting would
    // resurrect a refresh token the endpoint may already have rotated away.
    return false;  // the Transaction rolls back; nothing was written
  }

  const bool rotate = update.refresh_token.has_value();
  auto stmt = db.prepare(
      rotate ? "UPDATE mail_credentials SET access_token = ?2, token_expiry = ?3, "
               "refreshed_at_ms = ?4, updated_at = ?5, status = 'active', status_reason = NULL, "
               "refresh_token = ?6 WHERE email = ?1 AND refreshed_at_ms < ?4"
             : "UPDATE mail_credentials SET access_token = ?2, token_expiry = ?3, "
               "refreshed_at_ms = ?4, updated_at = ?5, status = 'active', status_reason = NULL "
               "WHERE email = ?1 AND refreshed_at_ms < ?4");
  if (!stmt) {
    return std::unexpected(stmt.error());
  }
  IOP_TRY(stmt->bind_text(1, email));
  IOP_TRY(impl_->bind_secret(*stmt, 2, email, column_access_token, update.access_token));
  IOP_TRY(stmt->bind_int64(3, update.token_expiry));
  IOP_TRY(stmt->bind_int64(4, update.refreshed_at_ms));
  IOP_TRY(stmt->bind_int64(5, now_seconds()));
  if (rotate) {
    IOP_TRY(impl_->bind_secret(*stmt, 6, email, column_refresh_token, *update.refresh_token));
  }
  auto step = stmt->step();
  if (!step) {
    return std::unexpected(step.error());
  }
  if (db.changes() != 1) {
    return fail(Errc::internal, "token update for " + std::string(email) + " changed " +
                                    std::to_string(db.changes()) + " rows");
  }
  IOP_TRY(tx->commit());
  return true;
}

Result<void> CredentialsStore::mark_needs_reauth(std::string_view email, std::string_view reason) {
  std::lock_guard lock(impl_->mu);
  // Secrets stay: an operator may fix the cause (consent, conditional access) and the stored
  // refresh token can then work again without a new authorization.
  auto stmt = impl_->db.prepare(
      "UPDATE mail_credentials SET status = 'needs_reauth', status_reason = ?2, updated_at = ?3 "
      "WHERE email = ?1");
  if (!stmt) {
    return std::unexpected(stmt.error());
  }
  IOP_TRY(stmt->bind_text(1, email));
  IOP_TRY(stmt->bind_text(2, reason));
  IOP_TRY(stmt->bind_int64(3, now_seconds()));
  auto step = stmt->step();
  if (!step) {
    return std::unexpected(step.error());
  }
  if (impl_->db.changes() == 0) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  return {};
}

Result<void> CredentialsStore::set_local_password_hash(std::string_view email,
                                                       std::string_view hash) {
  std::lock_guard lock(impl_->mu);
  auto stmt = impl_->db.prepare(
      "UPDATE mail_credentials SET local_password_hash = ?2, updated_at = ?3 WHERE email = ?1");
  if (!stmt) {
    return std::unexpected(stmt.error());
  }
  IOP_TRY(stmt->bind_text(1, email));
  // Empty clears the local password (stored as NULL, like the other absent values).
  IOP_TRY(hash.empty() ? stmt->bind_null(2) : stmt->bind_text(2, hash));
  IOP_TRY(stmt->bind_int64(3, now_seconds()));
  auto step = stmt->step();
  if (!step) {
    return std::unexpected(step.error());
  }
  if (impl_->db.changes() == 0) {
    return fail(Errc::not_found, "no account " + std::string(email));
  }
  return {};
}

Result<bool> CredentialsStore::remove(std::string_view email) {
  std::lock_guard lock(impl_->mu);
  auto stmt = impl_->db.prepare("DELETE FROM mail_credentials WHERE email = ?1");
  if (!stmt) {
    return std::unexpected(stmt.error());
  }
  IOP_TRY(stmt->bind_text(1, email));
  auto step = stmt->step();
  if (!step) {
    return std::unexpected(step.error());
  }
  return impl_->db.changes() > 0;
}

}  // namespace iop::storage

#undef IOP_TRY
