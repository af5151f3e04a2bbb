#include "common/secret.hpp"

#include <openssl/crypto.h>

#include "common/wipe.hpp"

namespace iop {

// Moves leave `other` empty and owning no heap buffer: GCC 12 destroys some by-value coroutine
// arguments twice (PR 100611), which is harmless only for an empty object.
Secret::Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }

Secret& Secret::operator=(const Secret& other) {
  if (this != &other) {
    wipe();
    value_ = other.value_;
  }
  return *this;
}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    wipe();
    value_ = std::move(other.value_);
    other.wipe();
  }
  return *this;
}

Secret::~Secret() { wipe(); }

void Secret::wipe() noexcept {
  // The whole buffer, including bytes past size() left by earlier, longer values (and the
  // small-string buffer a move leaves behind); then the heap buffer is given back.
  secure_wipe(value_);
  value_.shrink_to_fit();
}

bool operator==(const Secret& a, const Secret& b) {
  return a.value_.size() == b.value_.size() &&
         CRYPTO_memcmp(a.value_.data(), b.value_.data(), a.value_.size()) == 0;
}

}  // namespace iop
