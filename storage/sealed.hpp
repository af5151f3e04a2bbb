#pragma once
// Secrets at rest: AES-256-GCM under a 32-byte master key, with associated data binding each
// ciphertext to where it belongs (the account's email and the column), so a ciphertext copied to
// another row or column fails to decrypt. Also the subkeys and MACs that authenticate the
// non-secret columns deciding where a secret goes (credentials_store.cpp, the row MAC).

#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::storage {

class MasterKey {
 public:
  static constexpr std::size_t size = 32;

  // Reads an existing key file. Errors (Errc::key_error) name the path and the reason:
  // missing, unreadable, not exactly 32 bytes, readable by group or others.
  static Result<MasterKey> load(const std::filesystem::path& path);
  // Creates a new random key file with mode 0600 (fails if the file exists), fsyncs it and its
  // folder. Creates the parent folder (mode 0700) when missing.
  static Result<MasterKey> create(const std::filesystem::path& path);
  // load() when the file exists, create() otherwise.
  static Result<MasterKey> load_or_create(const std::filesystem::path& path);
  // For tests: a key from raw bytes (must be 32 bytes).
  static Result<MasterKey> from_bytes(Secret bytes);

  [[nodiscard]] const Secret& bytes() const { return bytes_; }

 private:
  explicit MasterKey(Secret bytes) : bytes_(std::move(bytes)) {}
  Secret bytes_;
};

// Encrypts `plaintext`. Output layout: version byte 0x01 | 12-byte random nonce | ciphertext |
// 16-byte tag. `aad` is authenticated, not stored.
std::string seal(const MasterKey& key, const Secret& plaintext, std::string_view aad);

// Decrypts a blob made by seal() with the same key and aad. Any mismatch (wrong key, other aad,
// truncated or altered blob, unknown version) fails with Errc::credentials_corrupt; no partial
// plaintext is ever returned.
Result<Secret> open_sealed(const MasterKey& key, std::string_view blob, std::string_view aad);

// A 32-byte key for one purpose, derived from the master key: HKDF-SHA256 (RFC 5869) with no salt
// (the master key is already uniformly random, RFC 5869 3.1) and `label` as the info. Distinct
// labels give independent keys, so a MAC made for one purpose never verifies for another, and
// the master key itself is only ever used for AES-GCM.
Secret derive_key(const MasterKey& key, std::string_view label);

// HMAC-SHA256 (RFC 2104) of `data` under `key`: 32 raw bytes.
std::string hmac_sha256(const Secret& key, std::string_view data);

// Compares two MACs in time that does not depend on where they differ (CRYPTO_memcmp), so a
// forger learns nothing from how long a rejection took. Different lengths are unequal.
bool mac_equal(std::string_view a, std::string_view b);

}  // namespace iop::storage
