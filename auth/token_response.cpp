#include "auth/token_response.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/aadsts.hpp"
#include "auth/json_seconds.hpp"
#include "common/ascii.hpp"
#include "common/json_wipe.hpp"

namespace iop::auth {

namespace {

using json = nlohmann::json;

constexpr std::size_t max_token_bytes = 16 * 1024;
constexpr std::int64_t min_expires_in = 1;
constexpr std::int64_t max_expires_in = 24 * 60 * 60;
// Retry-After values beyond a day are nonsense for a token endpoint; backoff_delay caps the
// wait further.
constexpr std::int64_t max_retry_after = 24 * 60 * 60;

// The OAuth error codes of RFC 6749 §5.2, the device flow (RFC 8628 §3.5) and Microsoft's
// additions. Any other "error" value is replaced before it reaches a message: a misbehaving
// endpoint could put anything there, a token included.
constexpr std::array<std::string_view, 18> known_errors = {
    "invalid_request",         "invalid_client",
    "invalid_grant",           "unauthorized_client",
    "unsupported_grant_type",  "invalid_scope",
    "access_denied",           "interaction_required",
    "consent_required",        "login_required",
    "temporarily_unavailable", "server_error",
    "authorization_pending",   "slow_down",
    "expired_token",           "authorization_declined",
    "bad_verification_code",   "invalid_resource",
};

bool is_known_error(std::string_view error) {
  return std::find(known_errors.begin(), known_errors.end(), error) != known_errors.end();
}

// Correlation and trace ids are UUIDs; anything else is dropped rather than logged.
std::string id_field(const json& body, const char* name) {
  if (!body.is_object()) {
    return {};
  }
  const auto it = body.find(name);
  if (it == body.end() || !it->is_string()) {
    return {};
  }
  const auto& value = it->get_ref<const std::string&>();
  const bool ok =
      !value.empty() && value.size() <= 64 &&
      std::all_of(value.begin(), value.end(), [](char c) { return is_ascii_hex(c) || c == '-'; });
  return ok ? value : std::string();
}

// RFC 9110 §10.2.3: Retry-After is an HTTP-date or delay-seconds. Only delay-seconds is used;
// a date would need a trustworthy clock comparison and Microsoft sends seconds.
std::optional<std::chrono::seconds> parse_retry_after(std::optional<std::string_view> header) {
  if (!header) {
    return std::nullopt;
  }
  const auto value = seconds_text(*header);
  if (!value) {
    return std::nullopt;
  }
  return std::chrono::seconds(std::min(*value, max_retry_after));
}

TokenError bad_response(int http_status, std::string explanation) {
  TokenError e;
  e.kind = GrantFailure::bad_response;
  e.http_status = http_status;
  e.explanation = std::move(explanation);
  return e;
}

bool transient_status(int status) { return status == 408 || status == 429 || status >= 500; }

// Builds the TokenError for an answer that is not a success: a non-200 status or an "error"
// member. `body` is the parsed JSON, or discarded when the body was not JSON.
TokenError classify_error(int http_status, const json& body,
                          std::optional<std::chrono::seconds> retry_after) {
  TokenError e;
  e.http_status = http_status;
  e.retry_after = retry_after;
  if (body.is_object()) {
    if (const auto it = body.find("error"); it != body.end() && it->is_string()) {
      const auto& error = it->get_ref<const std::string&>();
      e.error = is_known_error(error) ? error : "unrecognized_error";
    }
    if (const auto it = body.find("error_codes");
        it != body.end() && it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
      const auto code = (*it)[0].get<std::int64_t>();
      if (code > 0 && code < 1'000'000'000) {
        e.aadsts = static_cast<int>(code);
      }
    }
    if (e.aadsts == 0) {
      if (const auto it = body.find("error_description"); it != body.end() && it->is_string()) {
        e.aadsts = extract_aadsts(it->get_ref<const std::string&>());
      }
    }
    e.correlation_id = id_field(body, "correlation_id");
    e.trace_id = id_field(body, "trace_id");
  }
  // A plain value rather than the optional: GCC 12 warns (falsely) about the optional's
  // payload being used uninitialised once this is inlined.
  const auto found = e.aadsts != 0 ? lookup_aadsts(e.aadsts) : std::nullopt;
  const bool known = found.has_value();
  const AadstsInfo info = found.value_or(AadstsInfo{});

  // Overload and outages first: whatever the body says, the status tells us to come back later.
  if (transient_status(http_status)) {
    e.kind = GrantFailure::transient;
    e.explanation = fmt::format(
        "the token endpoint is unavailable (HTTP {}); the refresh will be retried later",
        http_status);
    return e;
  }
  // RFC 6749 §5.1 success is HTTP 200 only, and §5.2 errors are 400 (401 for invalid_client).
  // A 200 carrying an error contradicts itself, so it is not trusted to end an account.
  if (http_status == 200) {
    e.kind = GrantFailure::bad_response;
    e.explanation =
        "the token endpoint answered HTTP 200 with an error body; the refresh will be tried "
        "again at the next login";
    return e;
  }
  if (known && info.config) {
    e.kind = GrantFailure::config;
    e.explanation = std::string(info.explanation);
    return e;
  }
  const std::string_view error = e.error;
  if (error == "invalid_client" || error == "unauthorized_client") {
    e.kind = GrantFailure::config;
    e.explanation =
        "the token endpoint rejected this client; check [oauth] client_id, client_secret and "
        "token_endpoint";
    return e;
  }
  if (error == "invalid_request" || error == "unsupported_grant_type" || error == "invalid_scope") {
    e.kind = GrantFailure::config;
    e.explanation = known ? std::string(info.explanation)
                          : "the token endpoint rejected the request itself; check [oauth] "
                            "token_endpoint and scope";
    // A known permanent code under invalid_request (9002313 is sent this way) is the grant's
    // fault, not ours.
    if (known && info.permanent) {
      e.kind = GrantFailure::permanent;
    }
    return e;
  }
  if (error == "temporarily_unavailable" || error == "server_error") {
    e.kind = GrantFailure::transient;
    e.explanation = known ? std::string(info.explanation)
                          : "the token endpoint reports a temporary problem; the refresh will be "
                            "retried later";
    return e;
  }
  if (error == "invalid_grant" || error == "interaction_required" || error == "consent_required" ||
      error == "login_required" || error == "access_denied") {
    if (known && !info.permanent) {
      // A known temporary condition (a lock that clears, loop detection): the grant is fine.
      e.kind = GrantFailure::transient;
      e.explanation = std::string(info.explanation);
      return e;
    }
    e.kind = GrantFailure::permanent;
    e.explanation = known
                        ? std::string(info.explanation)
                        : "the token endpoint will not accept this refresh token again; run "
                          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again";
    return e;
  }
  if (known) {
    e.kind = info.permanent ? GrantFailure::permanent : GrantFailure::transient;
    e.explanation = std::string(info.explanation);
    return e;
  }
  e.kind = GrantFailure::bad_response;
  e.explanation =
      body.is_discarded()
          ? fmt::format("the token endpoint answered HTTP {} with a body that is not JSON",
                        http_status)
          : fmt::format("the token endpoint answered HTTP {} without a usable OAuth error",
                        http_status);
  return e;
}

}  // namespace

std::string_view to_string(GrantFailure kind) {
  switch (kind) {
    case GrantFailure::permanent:
      return "permanent";
    case GrantFailure::transient:
      return "transient";
    case GrantFailure::bad_response:
      return "bad_response";
    case GrantFailure::config:
      return "config";
  }
  return "unknown";
}

bool plausible_token(std::string_view token) {
  return !token.empty() && token.size() <= max_token_bytes &&
         std::all_of(token.begin(), token.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

std::expected<TokenGrant, TokenError> parse_token_response(
    int http_status, std::string_view body, std::optional<std::string_view> retry_after) {
  // No exceptions from the parser: a discarded value marks a body that is not JSON.
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  // The document holds copies of the tokens: wiped on every way out (issue #7, item 9).
  const JsonWipeGuard wipe_doc(doc);
  const bool has_error = doc.is_object() && doc.contains("error");
  if (http_status != 200 || has_error) {
    return std::unexpected(classify_error(http_status, doc, parse_retry_after(retry_after)));
  }
  if (doc.is_discarded()) {
    return std::unexpected(bad_response(http_status,
                                        "the token endpoint answered HTTP 200 with a body that is "
                                        "not JSON"));
  }
  if (!doc.is_object()) {
    return std::unexpected(
        bad_response(http_status,
                     "the token endpoint answered HTTP 200 with JSON that is not "
                     "an object"));
  }

  // RFC 6749 §7.1: the type is case-insensitive. A missing token_type is tolerated (it is
  // REQUIRED, but Bearer is the only type Microsoft issues).
  if (const auto it = doc.find("token_type"); it != doc.end()) {
    if (!it->is_string() || !ascii_iequals(it->get_ref<const std::string&>(), "bearer")) {
      return std::unexpected(
          bad_response(http_status, "the token endpoint issued a token_type other than Bearer"));
    }
  }

  TokenGrant grant;
  const auto at = doc.find("access_token");
  if (at == doc.end() || !at->is_string()) {
    return std::unexpected(bad_response(http_status,
                                        "the token endpoint's answer has no "
                                        "access_token"));
  }
  if (!plausible_token(at->get_ref<const std::string&>())) {
    return std::unexpected(
        bad_response(http_status,
                     "the token endpoint's access_token is empty, too long or holds characters "
                     "a token cannot have"));
  }
  // Moved, not copied: one copy fewer to wipe.
  grant.access_token = Secret(std::move(at->get_ref<std::string&>()));

  const auto exp = doc.find("expires_in");
  if (exp == doc.end()) {
    return std::unexpected(bad_response(http_status,
                                        "the token endpoint's answer has no "
                                        "expires_in"));
  }
  const auto seconds = json_seconds(*exp);
  if (!seconds) {
    return std::unexpected(bad_response(
        http_status, "the token endpoint's expires_in is not a whole number of seconds"));
  }
  if (*seconds < min_expires_in || *seconds > max_expires_in) {
    return std::unexpected(bad_response(
        http_status, fmt::format("the token endpoint's expires_in is outside 1 s .. 24 h{}",
                                 *seconds < min_expires_in ? " (not positive)" : "")));
  }
  grant.expires_in = std::chrono::seconds(*seconds);

  if (const auto rt = doc.find("refresh_token"); rt != doc.end() && !rt->is_null()) {
    if (!rt->is_string() || !plausible_token(rt->get_ref<const std::string&>())) {
      return std::unexpected(
          bad_response(http_status,
                       "the token endpoint's refresh_token is empty, too long or holds "
                       "characters a token cannot have"));
    }
    grant.refresh_token = Secret(std::move(rt->get_ref<std::string&>()));
  }
  if (const auto scope = doc.find("scope"); scope != doc.end() && scope->is_string()) {
    grant.scope = scope->get<std::string>();
  }
  if (const auto id = doc.find("id_token"); id != doc.end() && id->is_string()) {
    grant.id_token = id->get<std::string>();
  }
  return grant;
}

Error to_error(const TokenError& e) {
  Errc code = Errc::endpoint_bad_response;
  std::string_view what = "token endpoint gave an unusable answer";
  switch (e.kind) {
    case GrantFailure::permanent:
      code = Errc::needs_reauth;
      what = "token endpoint refused the refresh token";
      break;
    case GrantFailure::transient:
      code = Errc::endpoint_unavailable;
      what = "token endpoint unavailable";
      break;
    case GrantFailure::config:
      code = Errc::endpoint_bad_response;
      what = "token endpoint rejected the client configuration";
      break;
    case GrantFailure::bad_response:
      break;
  }
  std::vector<std::string> details;
  if (!e.error.empty()) {
    details.push_back(e.error);
  }
  if (e.aadsts != 0) {
    details.push_back(fmt::format("AADSTS{}", e.aadsts));
  }
  if (e.http_status != 0 && e.kind != GrantFailure::permanent) {
    details.push_back(fmt::format("HTTP {}", e.http_status));
  }
  if (!e.correlation_id.empty()) {
    details.push_back("correlation id " + e.correlation_id);
  }
  std::string message(what);
  if (!details.empty()) {
    message += fmt::format(" ({})", fmt::join(details, ", "));
  }
  if (!e.explanation.empty()) {
    message += ": " + e.explanation;
  }
  return Error{code, std::move(message)};
}

}  // namespace iop::auth
