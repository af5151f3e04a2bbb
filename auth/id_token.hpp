#pragma once
// Reading the signed-in identity from an OpenID Connect id_token (OIDC Core §2, §3.1.3.7). Pure.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace iop::auth {

// The claims that say who signed in. An absent claim (or one that is not a printable string)
// is empty.
struct IdentityClaims {
  std::string preferred_username;  // Microsoft: the sign-in name, usually the address
  std::string email;
  std::optional<bool> email_verified;  // Google sends it; false: `email` is not used to match
  std::string upn;                     // Microsoft work accounts (v1 tokens, optional claim)
  std::string tid;                     // Microsoft tenant id
  std::string iss;
  std::string name;  // display name, for messages
};

// Decodes the payload of `jwt` (compact JWS: header.payload.signature, RFC 7515 §7.1).
//
// The signature is NOT checked: this is only for an id_token received directly from the token
// endpoint over TLS with verified server certificate, where OIDC Core §3.1.3.7 (6) allows TLS
// server validation in place of the signature. Never use it on a token from anywhere else.
//
// Fails with Errc::endpoint_bad_response when `jwt` does not have three dot-separated parts,
// when the payload is not base64url, or when it is not a JSON object.
Result<IdentityClaims> decode_id_token(std::string_view jwt);

// The addresses the signed-in user may go by, in order: preferred_username, email (unless
// email_verified is false), upn; empty and repeated (case-insensitively) ones left out.
std::vector<std::string> identity_candidates(const IdentityClaims& claims);

// Whether one of identity_candidates(claims) is `expected_email`, compared as the project
// compares account addresses (normalize_email: case-insensitive). False when `expected_email`
// is not an address.
bool identity_matches(const IdentityClaims& claims, std::string_view expected_email);

}  // namespace iop::auth
