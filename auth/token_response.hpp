#pragma once
// Parsing a token endpoint's answer (Microsoft identity platform v2.0, RFC 6749 §5). Pure.

#include <chrono>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

struct TokenGrant {
  Secret access_token;
  std::chrono::seconds expires_in{0};
  std::optional<Secret> refresh_token;  // present when the endpoint rotated it
  std::string scope;
  // OpenID Connect id_token (when the request asked for `openid`): who signed in. Personal
  // data, never logged.
  std::optional<std::string> id_token;
};

enum class GrantFailure {
  permanent,     // invalid_grant and kin: the account needs re-authorization
  transient,     // 408/429/5xx, network error, timeout: retry later
  bad_response,  // not a usable answer (malformed JSON, missing fields, absurd expires_in)
  config,        // our side is wrong (unknown client id, bad client secret): operator must act
};
std::string_view to_string(GrantFailure kind);

struct TokenError {
  GrantFailure kind = GrantFailure::bad_response;
  int http_status = 0;
  std::string error;           // OAuth "error" field, e.g. invalid_grant
  int aadsts = 0;              // 0 when none
  std::string correlation_id;  // Microsoft's correlation_id, for support requests
  std::string trace_id;
  std::string explanation;  // operator-facing, never holds a secret
  std::optional<std::chrono::seconds> retry_after;
};

// Classifies an HTTP answer. `retry_after` is the raw Retry-After header, if any (seconds form;
// the HTTP-date form is ignored). An HTTP 200 with an "error" member is an error. expires_in
// must be within 1 s .. 24 h; access_token must be non-empty and printable ASCII.
std::expected<TokenGrant, TokenError> parse_token_response(int http_status, std::string_view body,
                                                           std::optional<std::string_view> retry_after);

// The Error the rest of the program sees for a TokenError: permanent -> Errc::needs_reauth,
// transient -> Errc::endpoint_unavailable, bad_response/config -> Errc::endpoint_bad_response.
// The message holds the explanation, the AADSTS code and the correlation id.
Error to_error(const TokenError& e);

// Whether `token` is plausible as a refresh or access token: non-empty, printable ASCII without
// spaces or control characters, at most 16 KiB.
bool plausible_token(std::string_view token);

}  // namespace iop::auth
