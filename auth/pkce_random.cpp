// The random halves of auth/pkce.hpp, kept in the auth library so auth_core needs no random
// generator.
#include "auth/pkce.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <stdexcept>
#include <string>

#include "auth/base64.hpp"
#include "common/wipe.hpp"

namespace iop::auth {

namespace {

// base64url of `bytes` random bytes from OpenSSL's CSPRNG; the raw bytes are wiped.
std::string random_base64url(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(raw.size())) != 1) {
    throw std::runtime_error("the random generator failed");
  }
  std::string encoded = base64url_encode(raw);
  secure_wipe(raw);
  return encoded;
}

}  // namespace

PkcePair make_pkce() {
  // RFC 7636 §4.1: "a 32-octet sequence ... base64url-encoded to produce a 43-octet URL safe
  // string to use as the code verifier".
  return pkce_from_verifier(Secret(random_base64url(32)));
}

std::string make_state() { return random_base64url(32); }

}  // namespace iop::auth
