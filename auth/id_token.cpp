#include "auth/id_token.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "auth/base64.hpp"
#include "common/email.hpp"

namespace iop::auth {

namespace {

using json = nlohmann::json;

// A JWT from a token endpoint is a few KB; anything much larger is not one of ours.
constexpr std::size_t max_jwt_bytes = 64 * 1024;
constexpr std::size_t max_claim_bytes = 1024;

// These values end up in terminal messages ("signed in as ..."): control characters are refused
// so a claim cannot move the cursor or rewrite the line. UTF-8 (display names) is kept.
std::string string_claim(const json& payload, const char* name) {
  const auto it = payload.find(name);
  if (it == payload.end() || !it->is_string()) {
    return {};
  }
  const auto& value = it->get_ref<const std::string&>();
  const bool printable =
      value.size() <= max_claim_bytes && std::none_of(value.begin(), value.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      });
  return printable ? value : std::string();
}

// The comparison key of an address: normalize_email's lower-casing, or the text itself when it
// is not a valid address (then it can only equal itself).
std::string address_key(std::string_view text) {
  auto normalized = normalize_email(text);
  return normalized ? std::move(*normalized) : std::string(text);
}

}  // namespace

Result<IdentityClaims> decode_id_token(std::string_view jwt) {
  constexpr std::string_view not_jwt =
      "the id_token is not a JWT (expected three dot-separated base64url parts)";
  if (jwt.size() > max_jwt_bytes) {
    return fail(Errc::endpoint_bad_response, std::string(not_jwt) + ": it is too long");
  }
  const auto first = jwt.find('.');
  const auto second = first == std::string_view::npos ? first : jwt.find('.', first + 1);
  if (second == std::string_view::npos || jwt.find('.', second + 1) != std::string_view::npos) {
    return fail(Errc::endpoint_bad_response, std::string(not_jwt));
  }
  const auto header = jwt.substr(0, first);
  const auto payload_text = jwt.substr(first + 1, second - first - 1);
  if (header.empty() || payload_text.empty()) {
    return fail(Errc::endpoint_bad_response, std::string(not_jwt));
  }
  const auto payload_json = base64url_decode(payload_text);
  if (!payload_json) {
    return fail(Errc::endpoint_bad_response, "the id_token's payload is not valid base64url");
  }
  const json payload = json::parse(*payload_json, nullptr, /*allow_exceptions=*/false);
  if (!payload.is_object()) {
    return fail(Errc::endpoint_bad_response, "the id_token's payload is not a JSON object");
  }
  IdentityClaims claims;
  claims.preferred_username = string_claim(payload, "preferred_username");
  claims.email = string_claim(payload, "email");
  if (const auto it = payload.find("email_verified"); it != payload.end()) {
    // OIDC Core §5.1 makes it a boolean; some providers have sent the string "true".
    if (it->is_boolean()) {
      claims.email_verified = it->get<bool>();
    } else if (it->is_string()) {
      claims.email_verified = it->get_ref<const std::string&>() == "true";
    }
  }
  claims.upn = string_claim(payload, "upn");
  claims.tid = string_claim(payload, "tid");
  claims.iss = string_claim(payload, "iss");
  claims.name = string_claim(payload, "name");
  return claims;
}

std::vector<std::string> identity_candidates(const IdentityClaims& claims) {
  std::vector<std::string> out;
  std::vector<std::string> keys;
  const bool email_usable = claims.email_verified.value_or(true);
  for (const std::string* value :
       {&claims.preferred_username, email_usable ? &claims.email : nullptr, &claims.upn}) {
    if (value == nullptr || value->empty()) {
      continue;
    }
    auto key = address_key(*value);
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) {
      continue;
    }
    keys.push_back(std::move(key));
    out.push_back(*value);
  }
  return out;
}

bool identity_matches(const IdentityClaims& claims, std::string_view expected_email) {
  // The point is to catch the wrong account signed in in the browser (issue #6 §3), not to
  // authenticate: the mailbox server decides what the token may open.
  const auto expected = normalize_email(expected_email);
  if (!expected) {
    return false;
  }
  const auto candidates = identity_candidates(claims);
  return std::any_of(candidates.begin(), candidates.end(), [&](const std::string& candidate) {
    const auto normalized = normalize_email(candidate);
    return normalized && *normalized == *expected;
  });
}

}  // namespace iop::auth
