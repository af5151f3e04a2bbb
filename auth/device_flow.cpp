#include "auth/device_flow.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/aadsts.hpp"
#include "auth/json_seconds.hpp"
#include "common/ascii.hpp"

namespace iop::auth {

namespace {

using json = nlohmann::json;
using std::chrono::seconds;

constexpr std::int64_t max_expires_in = 24 * 60 * 60;
constexpr std::int64_t max_interval = 5 * 60;
constexpr seconds default_interval{5};  // RFC 8628 §3.2
constexpr seconds slow_down_step{5};    // RFC 8628 §3.5
constexpr seconds max_backoff{60};      // transient failures while polling
constexpr std::size_t max_field_bytes = 2048;

// The details in parentheses: the OAuth error (already restricted to known values by
// parse_token_response), the AADSTS code, the HTTP status and the correlation id.
std::string details_of(const TokenError& e) {
  std::vector<std::string> details;
  if (!e.error.empty()) {
    details.push_back(e.error);
  }
  if (e.aadsts != 0) {
    details.push_back(fmt::format("AADSTS{}", e.aadsts));
  }
  if (e.http_status != 0) {
    details.push_back(fmt::format("HTTP {}", e.http_status));
  }
  if (!e.correlation_id.empty()) {
    details.push_back("correlation id " + e.correlation_id);
  }
  return details.empty() ? std::string() : fmt::format(" ({})", fmt::join(details, ", "));
}

// What the operator should do about an error answer of an interactive flow. The explanations of
// parse_token_response speak of refreshes; these speak of signing in.
std::string flow_explanation(const TokenError& e, std::string_view endpoint) {
  if (e.kind == GrantFailure::transient && (e.http_status == 408 || e.http_status == 429 ||
                                            e.http_status >= 500 || e.http_status == 0)) {
    return fmt::format("the {} is unavailable; try again in a moment", endpoint);
  }
  if (e.aadsts != 0) {
    if (const auto info = lookup_aadsts(e.aadsts)) {
      return std::string(info->explanation);
    }
  }
  const std::string_view error = e.error;
  if (error == "invalid_scope") {
    return "the requested scope is not valid for this application; check the provider's scope";
  }
  if (error == "invalid_client" || error == "unauthorized_client") {
    return "the application (client id) may not use the device code flow; check the client id "
           "and allow public client flows in the app registration";
  }
  if (error == "invalid_request") {
    return fmt::format("the {} rejected the request; check the provider's endpoints and client id",
                       endpoint);
  }
  if (error == "invalid_grant") {
    return "the device code was not accepted; run the command again";
  }
  if (error == "temporarily_unavailable" || error == "server_error") {
    return fmt::format("the {} reports a temporary problem; try again in a moment", endpoint);
  }
  return fmt::format(
      "the {} answered without a usable OAuth error; check the provider's "
      "endpoints",
      endpoint);
}

// A string field as-is when present, printable ASCII and not too long (these are shown on a
// terminal or put in an URL); nullopt when absent or unusable.
std::optional<std::string> ascii_field(const json& doc, const char* name) {
  const auto it = doc.find(name);
  if (it == doc.end() || !it->is_string()) {
    return std::nullopt;
  }
  const auto& value = it->get_ref<const std::string&>();
  if (value.empty() || value.size() > max_field_bytes ||
      !std::all_of(value.begin(), value.end(), [](char c) { return c > ' ' && c < 0x7f; })) {
    return std::nullopt;
  }
  return value;
}

bool web_address(std::string_view uri) {
  return uri.starts_with("https://") || uri.starts_with("http://");
}

// A whole number of seconds from an integer or a string of digits (as some servers send it).
std::unexpected<Error> missing(std::string_view field) {
  return fail(Errc::endpoint_bad_response,
              fmt::format("the device authorization response has no {}", field));
}

}  // namespace

std::string_view to_string(DevicePollAction action) {
  switch (action) {
    case DevicePollAction::keep_polling:
      return "keep_polling";
    case DevicePollAction::expired:
      return "expired";
    case DevicePollAction::declined:
      return "declined";
    case DevicePollAction::bad_code:
      return "bad_code";
    case DevicePollAction::failed:
      return "failed";
  }
  return "unknown";
}

Result<DeviceAuthorization> parse_device_authorization(int http_status, std::string_view body) {
  const json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (http_status != 200 || (doc.is_object() && doc.contains("error"))) {
    // The error body has the token endpoint's shape (RFC 8628 §3.2 -> RFC 6749 §5.2), so
    // parse_token_response extracts error, AADSTS code and correlation id safely.
    const auto parsed = parse_token_response(http_status, body, std::nullopt);
    const TokenError e = parsed ? TokenError{} : parsed.error();
    const bool transient = e.kind == GrantFailure::transient && http_status != 200;
    return fail(transient ? Errc::endpoint_unavailable : Errc::endpoint_bad_response,
                fmt::format("the device authorization endpoint refused the request{}: {}",
                            details_of(e), flow_explanation(e, "device authorization endpoint")));
  }
  if (!doc.is_object()) {
    return fail(Errc::endpoint_bad_response,
                "the device authorization endpoint answered HTTP 200 with a body that is not a "
                "JSON object");
  }
  DeviceAuthorization out;
  const auto it = doc.find("device_code");
  if (it == doc.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    return missing("device_code");
  }
  if (!plausible_token(it->get_ref<const std::string&>())) {
    return fail(Errc::endpoint_bad_response,
                "the device authorization response's device_code is too long or holds "
                "characters a code cannot have");
  }
  out.device_code = Secret(it->get_ref<const std::string&>());

  auto user_code = ascii_field(doc, "user_code");
  if (!user_code) {
    return missing("user_code");
  }
  out.user_code = std::move(*user_code);

  // RFC 8628 names it verification_uri; Google's endpoint says verification_url.
  auto uri = ascii_field(doc, "verification_uri");
  if (!uri) {
    uri = ascii_field(doc, "verification_url");
  }
  if (!uri || !web_address(*uri)) {
    return missing("verification_uri (an http(s) address)");
  }
  out.verification_uri = std::move(*uri);
  if (auto complete = ascii_field(doc, "verification_uri_complete");
      complete && web_address(*complete)) {
    out.verification_uri_complete = std::move(*complete);
  }

  const auto exp = doc.find("expires_in");
  if (exp == doc.end()) {
    return missing("expires_in");
  }
  const auto expires_in = json_seconds(*exp);
  if (!expires_in || *expires_in < 1 || *expires_in > max_expires_in) {
    return fail(Errc::endpoint_bad_response,
                "the device authorization response's expires_in is not a whole number of "
                "seconds within 1 s .. 24 h");
  }
  out.expires_in = seconds(*expires_in);

  out.interval = default_interval;
  if (const auto iv = doc.find("interval"); iv != doc.end() && !iv->is_null()) {
    const auto interval = json_seconds(*iv);
    if (!interval || *interval < 1 || *interval > max_interval) {
      return fail(Errc::endpoint_bad_response,
                  "the device authorization response's interval is not a whole number of "
                  "seconds within 1 s .. 5 min");
    }
    out.interval = seconds(*interval);
  }

  // Microsoft's message is a sentence for the user; shown only when it is plain text.
  if (const auto msg = doc.find("message"); msg != doc.end() && msg->is_string()) {
    const auto& text = msg->get_ref<const std::string&>();
    if (text.size() <= max_field_bytes && std::none_of(text.begin(), text.end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
        })) {
      out.message = text;
    }
  }
  return out;
}

DevicePollStep next_device_step(const TokenError& error, seconds current_interval) {
  // RFC 8628 §3.5 error codes first: they come as HTTP 400 with kinds parse_token_response
  // would call permanent or bad_response, but here they are steps of the protocol.
  const std::string_view e = error.error;
  if (e == "authorization_pending") {
    return {DevicePollAction::keep_polling, current_interval, {}};
  }
  if (e == "slow_down") {
    return {DevicePollAction::keep_polling, current_interval + slow_down_step, {}};
  }
  if (e == "expired_token") {
    return {DevicePollAction::expired,
            {},
            "the code expired before sign-in finished; run the command again"};
  }
  if (e == "authorization_declined" || e == "access_denied") {
    return {DevicePollAction::declined, {}, "sign-in was declined; run the command again to retry"};
  }
  if (e == "bad_verification_code") {
    return {DevicePollAction::bad_code,
            {},
            "the token endpoint does not know this device code (bad_verification_code); run the "
            "command again"};
  }
  if (error.kind == GrantFailure::transient) {
    auto next = std::min(std::max(current_interval * 2, default_interval), max_backoff);
    if (error.retry_after && *error.retry_after > next) {
      next = std::min(*error.retry_after, seconds(max_interval));
    }
    return {DevicePollAction::keep_polling, next, {}};
  }
  return {DevicePollAction::failed,
          {},
          fmt::format("sign-in failed{}: {}", details_of(error),
                      flow_explanation(error, "token endpoint"))};
}

std::string countdown_line(const DeviceAuthorization& authorization, seconds remaining) {
  const auto total = std::max<std::int64_t>(remaining.count(), 0);
  const auto h = total / 3600;
  const auto m = (total % 3600) / 60;
  const auto s = total % 60;
  const auto left = h > 0 ? fmt::format("{}:{:02}:{:02}", h, m, s) : fmt::format("{}:{:02}", m, s);
  return fmt::format("waiting for sign-in at {} with code {} (expires in {})",
                     authorization.verification_uri, authorization.user_code, left);
}

}  // namespace iop::auth
