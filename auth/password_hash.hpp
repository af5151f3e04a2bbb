#pragma once
// Local passwords (what mail clients send to the proxy), hashed with scrypt (RFC 7914) through
// OpenSSL. Stored as "$scrypt$ln=<log2 N>,r=<r>,p=<p>$<base64 salt>$<base64 key>".

#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

struct ScryptParams {
  int log2_n = 15;  // N = 32768: 32 MiB with r = 8, about 50-100 ms on one core
  int r = 8;
  int p = 1;
};

// Hashes `password` with a fresh random salt. Errc::invalid_argument for an empty password.
Result<std::string> hash_password(const Secret& password, const ScryptParams& params = {});

// Whether `password` matches `encoded`, compared in constant time. A malformed `encoded`, or
// parameters beyond sane bounds (log2 N > 20, r > 32, p > 16), never matches.
bool verify_password(const Secret& password, std::string_view encoded);

}  // namespace iop::auth
