#pragma once
// The device authorization grant (RFC 8628) for a machine without a browser: reading the device
// authorization response, deciding what to do after each poll of the token endpoint, and the
// line shown while waiting. Pure: the caller does the HTTP requests and the waiting.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "auth/token_response.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

struct DeviceAuthorization {
  Secret device_code;  // sent back with every poll; never shown
  std::string user_code;
  std::string verification_uri;                          // Google: "verification_url"
  std::optional<std::string> verification_uri_complete;  // with the user code in it
  std::chrono::seconds expires_in{0};
  std::chrono::seconds interval{5};  // RFC 8628 §3.2: 5 s when the server gives none
  std::string message;               // Microsoft's ready-made instruction; empty when absent
};

// Reads the device authorization endpoint's answer (RFC 8628 §3.2). A missing or unusable field
// is a one-line error naming it ("the device authorization response has no user_code");
// expires_in must be within 1 s .. 24 h and interval within 1 s .. 5 min. An error answer
// (RFC 8628 §3.2 refers to RFC 6749 §5.2: 400 with error / error_description) is explained,
// with the AADSTS code in the message when Microsoft sent one. Errors: Errc::endpoint_unavailable
// for 408/429/5xx, Errc::endpoint_bad_response otherwise.
Result<DeviceAuthorization> parse_device_authorization(int http_status, std::string_view body);

enum class DevicePollAction {
  keep_polling,  // wait `interval`, then poll again
  expired,       // expired_token: the user did not finish in time
  declined,      // authorization_declined / access_denied
  bad_code,      // bad_verification_code
  failed,        // anything else: `message` says why
};
std::string_view to_string(DevicePollAction action);

struct DevicePollStep {
  DevicePollAction action = DevicePollAction::failed;
  std::chrono::seconds interval{0};  // keep_polling: the interval from now on
  std::string message;               // for the other actions: one line for the operator
};

// What to do after a poll (RFC 8628 §3.4) that did not give tokens, from the TokenError that
// parse_token_response() made of the token endpoint's answer. RFC 8628 §3.5:
// authorization_pending keeps `current_interval`; slow_down adds 5 s to it, for this and all
// later polls. A transient failure (408/429/5xx, timeout) keeps polling with the interval
// doubled (at most 60 s, at least Retry-After), as §3.5 asks for connection timeouts; the caller
// stops at the device code's expiry anyway.
DevicePollStep next_device_step(const TokenError& error, std::chrono::seconds current_interval);

// The live line shown on a terminal while waiting, e.g. "waiting for sign-in at
// https://microsoft.com/devicelogin with code ABCD-EFGH (expires in 14:32)". A negative
// `remaining` shows as 0:00.
std::string countdown_line(const DeviceAuthorization& authorization,
                           std::chrono::seconds remaining);

}  // namespace iop::auth
