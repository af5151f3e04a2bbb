#pragma once
// A count of seconds in a token endpoint's JSON answer: expires_in (RFC 6749 §5.1) and the
// device flow's expires_in and interval (RFC 8628 §3.2). Servers send a number, and some send a
// string of digits; both token_response and device_flow read them with this one function.

#include <cstdint>
#include <optional>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace iop::auth {

// The value as whole seconds: a JSON integer (an unsigned one too large for int64 saturates at
// the int64 maximum), or a string of at most 12 decimal digits with optional surrounding spaces
// or tabs (and trailing CR/LF). nullopt for anything else (fractions, signs, booleans, text).
// Negative integers are returned as they are: the caller checks the range it allows.
std::optional<std::int64_t> json_seconds(const nlohmann::json& value);

// The string rule of json_seconds alone, also used for an HTTP Retry-After delay-seconds
// (RFC 9110 §10.2.3): at most 12 decimal digits, no sign, with optional surrounding spaces or
// tabs (and trailing CR/LF, as a header line read by curl ends).
std::optional<std::int64_t> seconds_text(std::string_view text);

}  // namespace iop::auth
