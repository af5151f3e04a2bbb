// libFuzzer target for the SASL decoders (STYLE.md §3.10): the PLAIN client response (RFC 4616)
// as base64 and decoded, base64 and base64url themselves (RFC 4648 §4, §5), and the XOAUTH2
// initial response the proxy builds for the upstream. Besides the sanitizers, it checks:
// - base64_decode and base64url_decode accept only canonical text: re-encoding what they return
//   gives the input back (but see same_encoding), and decoding what the encoders give returns the
//   bytes;
// - parse_plain accepts exactly [authzid] NUL authcid NUL passwd with non-empty authcid and
//   passwd, fields within max_plain_field_bytes, authzid empty or the authcid up to ASCII case,
//   and the fields put back together are the message; decode_plain agrees with
//   base64_decode + parse_plain;
// - the XOAUTH2 response decodes to "user=" U "\x01auth=Bearer " T "\x01\x01", or is empty when
//   U or T holds \x01.
// The input is used whole for every check; for XOAUTH2 it is cut at its first NUL into user and
// token.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "auth/base64.hpp"
#include "auth/sasl.hpp"
#include "common/ascii.hpp"
#include "fuzz/require.hpp"

namespace {

using namespace iop;
using namespace iop::auth;

using iop::fuzz::require;

bool well_formed_plain(std::string_view m) {
  const auto first = m.find('\0');
  if (first == std::string_view::npos) {
    return false;
  }
  const auto second = m.find('\0', first + 1);
  if (second == std::string_view::npos || m.find('\0', second + 1) != std::string_view::npos) {
    return false;
  }
  const auto authzid = m.substr(0, first);
  const auto authcid = m.substr(first + 1, second - first - 1);
  const auto passwd = m.substr(second + 1);
  return !authcid.empty() && !passwd.empty() && authzid.size() <= max_plain_field_bytes &&
         authcid.size() <= max_plain_field_bytes && passwd.size() <= max_plain_field_bytes;
}

void check_plain(std::string_view message) {
  auto parsed = parse_plain(message);
  if (const auto* c = std::get_if<PlainCredentials>(&parsed)) {
    require(well_formed_plain(message));
    require(c->authzid.empty() || ascii_iequals(c->authzid, c->authcid));
    std::string joined = c->authzid;
    joined += '\0';
    joined += c->authcid;
    joined += '\0';
    joined += c->password.reveal();
    require(joined == message);
  } else if (std::get<PlainError>(parsed) == PlainError::authzid_mismatch) {
    require(well_formed_plain(message));
  } else {
    require(!well_formed_plain(message));
  }
}

// Whether `text`, accepted by a decoder, is `canonical` (the encoder's output for the same bytes).
// RFC 4648 §3.5: the decoders accept only canonical text, so a decoded value re-encodes to
// exactly what was read.
bool same_encoding(std::string_view text, std::string_view canonical) { return text == canonical; }

void check_base64(std::string_view input) {
  if (const auto decoded = auth::base64_decode(input)) {
    require(same_encoding(input, auth::base64_encode(*decoded)));
  }
  const auto again = auth::base64_decode(auth::base64_encode(input));
  require(again && *again == input);

  if (const auto decoded = auth::base64url_decode(input)) {
    require(same_encoding(input, auth::base64url_encode(*decoded)));
  }
  const auto url_again = auth::base64url_decode(auth::base64url_encode(input));
  require(url_again && *url_again == input);
}

void check_decode_plain(std::string_view base64) {
  const auto credentials = decode_plain(base64);
  const auto decoded = auth::base64_decode(base64);
  if (!decoded) {
    require(!credentials);
    return;
  }
  require(credentials.has_value() ==
          std::holds_alternative<PlainCredentials>(parse_plain(*decoded)));
}

void check_xoauth2(std::string_view input) {
  const auto cut = input.find('\0');
  const auto user = input.substr(0, cut);
  const auto token = cut == std::string_view::npos ? std::string_view{} : input.substr(cut + 1);
  const Secret ir = xoauth2_initial_response(user, Secret(token));
  if (user.find('\x01') != std::string_view::npos || token.find('\x01') != std::string_view::npos) {
    require(ir.empty());
    return;
  }
  const auto decoded = auth::base64_decode(ir.reveal());
  require(decoded.has_value());
  std::string expected = "user=";
  expected += user;
  expected +=
      "\x01"
      "auth=Bearer ";
  expected += token;
  expected += "\x01\x01";
  require(*decoded == expected);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_plain(input);
  check_base64(input);
  check_decode_plain(input);
  // The input's PLAIN message as a client would send it, so that decode_plain sees valid base64.
  check_decode_plain(auth::base64_encode(input));
  check_xoauth2(input);
  return 0;
}
