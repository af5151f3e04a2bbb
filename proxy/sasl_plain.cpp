#include "proxy/sasl_plain.hpp"

#include <utility>

#include "auth/base64.hpp"
#include "proxy/detail_wipe.hpp"

namespace iop::proxy {
namespace {

bool equal_ignoring_ascii_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') {
      x = static_cast<char>(x - 'A' + 'a');
    }
    if (y >= 'A' && y <= 'Z') {
      y = static_cast<char>(y - 'A' + 'a');
    }
    if (x != y) {
      return false;
    }
  }
  return true;
}

}  // namespace

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
  if (!authzid.empty() && !equal_ignoring_ascii_case(authzid, authcid)) {
    return PlainError::authzid_mismatch;
  }
  return PlainCredentials{std::string(authzid), std::string(authcid), Secret(password)};
}

std::optional<PlainCredentials> decode_plain(std::string_view base64) {
  std::optional<std::string> decoded = auth::base64_decode(base64);
  if (!decoded) {
    return std::nullopt;
  }
  auto parsed = parse_plain(*decoded);
  detail::wipe(*decoded);
  if (auto* credentials = std::get_if<PlainCredentials>(&parsed)) {
    return std::move(*credentials);
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
  Secret encoded(auth::base64_encode(raw));
  detail::wipe(raw);
  return encoded;
}

}  // namespace iop::proxy
