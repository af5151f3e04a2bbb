#include "storage/key_check.hpp"

#include <array>
#include <string>
#include <string_view>
#include <utility>

namespace iop::storage {

namespace {

constexpr std::string_view key_check_name = "key_check";
constexpr std::string_view key_check_aad = "meta:key_check";

constexpr std::array<std::pair<KeyCheck, std::string_view>, 3> texts = {{
    {KeyCheck::v1, "imap-oauth2-proxy master key check v1"},
    {KeyCheck::v2, "imap-oauth2-proxy master key check v2"},
    {KeyCheck::v3, "imap-oauth2-proxy master key check v3"},
}};

}  // namespace

Result<KeyCheck> read_key_check(sqlite::Database& db, const MasterKey& key) {
  IOP_TRY_ASSIGN(auto select, db.prepare("SELECT value FROM meta WHERE key = ?1"));
  IOP_TRY(select.bind_text(1, key_check_name));
  IOP_TRY_ASSIGN(auto step, select.step());
  if (step != sqlite::Statement::Step::row) {
    return KeyCheck::absent;
  }
  auto plain = open_sealed(key, select.column_blob(0), key_check_aad);
  if (plain) {
    for (const auto& [version, text] : texts) {
      if (plain->reveal() == text) {
        return version;
      }
    }
  }
  return fail(Errc::key_error, "the master key does not match the database " + db.path() +
                                   ": use the key file this database was created with");
}

Result<void> write_key_check(sqlite::Database& db, const MasterKey& key, KeyCheck version) {
  std::string_view text;
  for (const auto& [v, t] : texts) {
    if (v == version) {
      text = t;
    }
  }
  if (text.empty()) {
    return fail(Errc::internal, "write_key_check: no text for this version");
  }
  IOP_TRY_ASSIGN(auto stmt, db.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) "
                                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
  IOP_TRY(stmt.bind_text(1, key_check_name));
  IOP_TRY(stmt.bind_blob(2, seal(key, Secret(text), key_check_aad)));
  IOP_TRY(stmt.step());
  return {};
}

}  // namespace iop::storage
