// copy_credentials (storage/credentials_store.hpp): `migrate --to`, SQLite to PostgreSQL.

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>

#include "storage/credential_rows.hpp"
#include "storage/credentials_store.hpp"

namespace iop::storage {

namespace {

bool same_row(const StoredRow& a, const StoredRow& b) {
  return a.email == b.email && a.use_oauth == b.use_oauth && a.access_token == b.access_token &&
         a.refresh_token == b.refresh_token && a.token_expiry == b.token_expiry &&
         a.refreshed_at_ms == b.refreshed_at_ms && a.password == b.password &&
         a.local_password_hash == b.local_password_hash && a.upstream_host == b.upstream_host &&
         a.upstream_port == b.upstream_port && a.status == b.status &&
         a.status_reason == b.status_reason && a.created_at == b.created_at &&
         a.updated_at == b.updated_at && a.provider == b.provider && a.tenant == b.tenant &&
         a.client_id == b.client_id && a.client_secret == b.client_secret &&
         a.client_certificate == b.client_certificate && a.signed_in_as == b.signed_in_as &&
         a.row_mac == b.row_mac;
}

}  // namespace

Result<std::size_t> copy_credentials(const std::filesystem::path& from, std::string_view to,
                                     const Secret& to_password, const MasterKey& key) {
  // A copy must not create an empty source in a wrong place (a mistyped --config).
  if (!std::filesystem::exists(from)) {
    return fail(Errc::not_found, "no database at " + from.string() + ": nothing to copy");
  }
  // Opened as stores first: the key is checked on both sides (and the target gets its schema
  // and key check), and rows from before the row MAC get theirs, as any open would.
  std::vector<AccountSummary> source_accounts;
  {
    IOP_TRY_ASSIGN(auto source, CredentialsStore::open(from, key));
    IOP_TRY_ASSIGN(source_accounts, source->list());
  }
  IOP_TRY_ASSIGN(auto target_store, CredentialsStore::open(to, to_password, key));

  IOP_TRY_ASSIGN(auto source, open_sqlite_rows(from));
  IOP_TRY_ASSIGN(auto target, open_pg_rows(to, to_password));
  IOP_TRY_ASSIGN(const auto rows, source->load_rows());
  {
    IOP_TRY_ASSIGN(auto tx, target->begin_write());
    IOP_TRY_ASSIGN(const auto existing, target->load_rows());
    // Exactly the source's rows: a migrate that stopped after committing them (its log part
    // failed), run again. Anything else is someone's data.
    const bool copied_before =
        !existing.empty() && existing.size() == rows.size() &&
        std::all_of(rows.begin(), rows.end(), [&](const StoredRow& row) {
          return std::any_of(existing.begin(), existing.end(),
                             [&](const StoredRow& other) { return same_row(row, other); });
        });
    if (copied_before) {
      return rows.size();
    }
    if (!existing.empty()) {
      return fail(Errc::already_exists,
                  "the target database already holds " + std::to_string(existing.size()) +
                      " account(s): migrate copies into a database without accounts (nothing "
                      "was written)");
    }
    for (const auto& row : rows) {
      IOP_TRY(target->write_row(row, false));
    }
    IOP_TRY(tx->commit());
  }

  // Read back: every field as it was, and every account verifies where it did before. By email:
  // the two engines may sort differently (PostgreSQL follows the database's collation).
  IOP_TRY_ASSIGN(const auto copied, target->load_rows());
  if (copied.size() != rows.size()) {
    return fail(Errc::internal, "the copy holds " + std::to_string(copied.size()) +
                                    " accounts, the source " + std::to_string(rows.size()));
  }
  std::map<std::string, const StoredRow*> by_email;
  for (const auto& row : copied) {
    by_email[row.email] = &row;
  }
  for (const auto& row : rows) {
    const auto it = by_email.find(row.email);
    if (it == by_email.end() || !same_row(row, *it->second)) {
      return fail(Errc::internal, "account " + row.email + " reads back differently");
    }
  }
  IOP_TRY_ASSIGN(const auto target_accounts, target_store->list());
  std::map<std::string, bool> verified;
  for (const auto& a : target_accounts) {
    verified[a.email] = a.verified;
  }
  for (const auto& a : source_accounts) {
    if (verified[a.email] != a.verified) {
      return fail(Errc::internal, "account " + a.email + " verifies differently after the copy");
    }
  }
  return rows.size();
}

}  // namespace iop::storage
