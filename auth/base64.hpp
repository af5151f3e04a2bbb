#pragma once
// Base64 (RFC 4648 §4, with padding). Pure.

#include <optional>
#include <string>
#include <string_view>

namespace iop::auth {

std::string base64_encode(std::string_view bytes);
// nullopt for anything but canonical padded base64 (whitespace is not skipped).
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace iop::auth
