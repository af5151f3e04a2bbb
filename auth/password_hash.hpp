#pragma once
// Local passwords (what mail clients send to the proxy), hashed with scrypt (RFC 7914) through
// OpenSSL. Stored as "$scrypt$ln=<log2 N>,r=<r>,p=<p>$<base64 salt>$<base64 key>".

#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

struct ScryptParams {
  // N = 2^17 with r = 8: 128 MiB and roughly 0.3-0.6 s on one core per hash. Current guidance
  // (OWASP Password Storage Cheat Sheet) asks for at least N = 2^17, r = 8, p = 1; 2^15 was used
  // before issue #7 and such hashes are upgraded on the next successful login.
  int log2_n = 17;
  int r = 8;
  int p = 1;
};

// Hashes `password` with a fresh random salt. Errc::invalid_argument for an empty password.
Result<std::string> hash_password(const Secret& password, const ScryptParams& params = {});

// Whether `password` matches `encoded`, compared in constant time. A malformed `encoded`, or
// parameters beyond sane bounds (log2 N > 20, r > 32, p > 16), never matches.
bool verify_password(const Secret& password, std::string_view encoded);

// The parameters recorded in `encoded`, when it is a well-formed hash within the bounds above.
std::optional<ScryptParams> hash_parameters(std::string_view encoded);

// Whether `encoded` is weaker than `target` in any parameter (or unreadable), so that a login
// that just proved the password should store a fresh hash made with `target`.
bool needs_rehash(std::string_view encoded, const ScryptParams& target);

}  // namespace iop::auth
