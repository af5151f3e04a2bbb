#pragma once
// Percent-decoding (RFC 3986 §2.1) for the two places that read encoded text: the query of an
// OAuth redirect (application/x-www-form-urlencoded, where "+" is a space, WHATWG URL §5.1) and
// the password in a redis:// URL (":", "@" or "/" in a password must be encoded). Pure.

#include <optional>
#include <string>
#include <string_view>

namespace iop {

enum class PlusIs {
  plus,   // RFC 3986: "+" is itself (a URL's userinfo)
  space,  // application/x-www-form-urlencoded: "+" is a space
};

// Decodes every "%HH" (either case of hex digits). nullopt when a "%" is not followed by two hex
// digits; the decoded bytes are not checked for UTF-8 or NUL: the caller decides what it accepts.
std::optional<std::string> percent_decode(std::string_view text, PlusIs plus = PlusIs::plus);

}  // namespace iop
