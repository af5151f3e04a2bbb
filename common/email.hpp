#pragma once
// Account identifiers are email addresses, compared case-insensitively (stored lower-cased).

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace iop {

// Validates `text` as a plain addr-spec (local@domain, printable ASCII, no spaces, quotes,
// brackets or control characters, at most 254 bytes) and returns it lower-cased.
// Fails with Errc::invalid_argument and a reason.
Result<std::string> normalize_email(std::string_view text);

}  // namespace iop
