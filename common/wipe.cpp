#include "common/wipe.hpp"

#include <openssl/crypto.h>

namespace iop {

void secure_wipe(std::span<std::byte> bytes) noexcept {
  if (!bytes.empty()) {
    OPENSSL_cleanse(bytes.data(), bytes.size());
  }
}

void secure_wipe(std::span<char> bytes) noexcept { secure_wipe(std::as_writable_bytes(bytes)); }

void secure_wipe(std::span<unsigned char> bytes) noexcept {
  secure_wipe(std::as_writable_bytes(bytes));
}

void secure_wipe(std::string& s) noexcept {
  // resize() within the capacity does not allocate, so this cannot throw.
  s.resize(s.capacity());
  secure_wipe(std::span<char>(s.data(), s.size()));
  s.clear();
}

void secure_wipe(std::vector<unsigned char>& v) noexcept {
  v.resize(v.capacity());
  secure_wipe(std::span<unsigned char>(v.data(), v.size()));
  v.clear();
}

}  // namespace iop
