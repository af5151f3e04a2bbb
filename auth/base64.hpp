#pragma once
// Base64 (RFC 4648 §4, with padding) and base64url (RFC 4648 §5, without padding, as JWS and
// PKCE use it: RFC 7515 §2, RFC 7636 Appendix A). Pure.

#include <optional>
#include <string>
#include <string_view>

namespace iop::auth {

std::string base64_encode(std::string_view bytes);
// nullopt for anything but canonical padded base64 (whitespace is not skipped).
std::optional<std::string> base64_decode(std::string_view text);

// base64url with the padding left off (RFC 7515 §2 "Base64url Encoding").
std::string base64url_encode(std::string_view bytes);
// nullopt for anything but unpadded base64url: '=', '+', '/', whitespace, or a length that leaves
// a lone 6-bit group (length % 4 == 1) are rejected.
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace iop::auth
