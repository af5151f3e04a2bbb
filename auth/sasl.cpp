#include "auth/sasl.hpp"

#include <utility>

#include "auth/base64.hpp"
#include "common/ascii.hpp"
#include "common/wipe.hpp"

namespace iop::auth {
std::variant<PlainCredentials, PlainError> parse_plain(std::string_view message) {
  const std::size_t first = message.find('\0');
  if (first == std::string_view::npos) {
    return PlainError::malformed;
  }
  const std::size_t second = message.find('\0', first + 1);
  if (second == std::string_view::npos) {
    return PlainError::malformed;
  }
  const std::string_view authzid = message.substr(0, first);
  const std::string_view authcid = message.substr(first + 1, second - first - 1);
  const std::string_view password = message.substr(second + 1);
  // A third NUL would sit inside the password; RFC 4616 SAFE excludes NUL from every field.
  if (password.find('\0') != std::string_view::npos) {
    return PlainError::malformed;
  }
  // RFC 4616 §2: authcid = 1*SAFE, passwd = 1*SAFE.
  if (authcid.empty() || password.empty()) {
    return PlainError::malformed;
  }
  if (authzid.size() > max_plain_field_bytes || authcid.size() > max_plain_field_bytes ||
      password.size() > max_plain_field_bytes) {
    return PlainError::malformed;
  }
  // RFC 4616 §2: the server decides whether authcid may act as authzid. The proxy has no
  // proxy-authorization, so only "none" or "myself" is accepted; user names are e-mail addresses,
  // compared without regard to ASCII case (issue #3).
  if (!authzid.empty() && !ascii_iequals(authzid, authcid)) {
    return PlainError::authzid_mismatch;
  }
  return PlainCredentials{std::string(authzid), std::string(authcid), Secret(password)};
}

std::optional<PlainCredentials> decode_plain(std::string_view base64, PlainError* why) {
  std::optional<std::string> decoded = base64_decode(base64);
  if (!decoded) {
    if (why != nullptr) {
      *why = PlainError::malformed;
    }
    return std::nullopt;
  }
  auto parsed = parse_plain(*decoded);
  secure_wipe(*decoded);
  if (auto* credentials = std::get_if<PlainCredentials>(&parsed)) {
    return std::move(*credentials);
  }
  if (why != nullptr) {
    *why = std::get<PlainError>(parsed);
  }
  return std::nullopt;
}

Secret xoauth2_initial_response(std::string_view user, const Secret& token) {
  if (user.find('\x01') != std::string_view::npos ||
      token.reveal().find('\x01') != std::string::npos) {
    return Secret{};
  }
  std::string raw;
  raw.reserve(user.size() + token.size() + 20);
  raw += "user=";
  raw += user;
  raw +=
      "\x01"
      "auth=Bearer ";
  raw += token.reveal();
  raw += "\x01\x01";
  Secret encoded(base64_encode(raw));
  secure_wipe(raw);
  return encoded;
}

}  // namespace iop::auth
