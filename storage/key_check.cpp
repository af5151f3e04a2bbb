#include "storage/key_check.hpp"

#include <array>
#include <string>
#include <string_view>
#include <utility>

namespace iop::storage {

namespace {

constexpr std::string_view key_check_aad = "meta:key_check";

constexpr std::array<std::pair<KeyCheck, std::string_view>, 3> texts = {{
    {KeyCheck::v1, "imap-oauth2-proxy master key check v1"},
    {KeyCheck::v2, "imap-oauth2-proxy master key check v2"},
    {KeyCheck::v3, "imap-oauth2-proxy master key check v3"},
}};

}  // namespace

Result<KeyCheck> decode_key_check(const std::optional<std::string>& sealed, const MasterKey& key,
                                  std::string_view where) {
  if (!sealed) {
    return KeyCheck::absent;
  }
  auto plain = open_sealed(key, *sealed, key_check_aad);
  if (plain) {
    for (const auto& [version, text] : texts) {
      if (plain->reveal() == text) {
        return version;
      }
    }
  }
  return fail(Errc::key_error, "the master key does not match the database " + std::string(where) +
                                   ": use the key file this database was created with");
}

Result<std::string> encode_key_check(const MasterKey& key, KeyCheck version) {
  for (const auto& [v, text] : texts) {
    if (v == version) {
      return seal(key, Secret(text), key_check_aad);
    }
  }
  return fail(Errc::internal, "encode_key_check: no text for this version");
}

Result<KeyCheck> read_key_check(sqlite::Database& db, const MasterKey& key) {
  IOP_TRY_ASSIGN(auto select, db.prepare("SELECT value FROM meta WHERE key = ?1"));
  IOP_TRY(select.bind_text(1, key_check_name));
  IOP_TRY_ASSIGN(auto step, select.step());
  std::optional<std::string> sealed;
  if (step == sqlite::Statement::Step::row) {
    sealed = select.column_blob(0);
  }
  return decode_key_check(sealed, key, db.path());
}

Result<void> write_key_check(sqlite::Database& db, const MasterKey& key, KeyCheck version) {
  IOP_TRY_ASSIGN(const std::string sealed, encode_key_check(key, version));
  IOP_TRY_ASSIGN(auto stmt, db.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) "
                                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
  IOP_TRY(stmt.bind_text(1, key_check_name));
  IOP_TRY(stmt.bind_blob(2, sealed));
  IOP_TRY(stmt.step());
  return {};
}

}  // namespace iop::storage
