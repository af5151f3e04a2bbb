#pragma once
// SASL strings the proxy reads and writes: PLAIN from the mail client (RFC 4616) and the XOAUTH2
// initial response for the upstream server (Google's and Microsoft's XOAUTH2 notes, in the
// spirit of RFC 7628). Pure functions; secrets stay in Secret.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "common/secret.hpp"

namespace iop::auth {

// Longest authzid, authcid or password accepted. RFC 4616 §2 requires at least 255 octets.
inline constexpr std::size_t max_plain_field_bytes = 1024;

// The fields of a PLAIN message. `authzid` is empty or equal to `authcid`.
struct PlainCredentials {
  std::string authzid;
  std::string authcid;
  Secret password;
};

// Why a PLAIN message was refused.
enum class PlainError {
  malformed,         // not authzid NUL authcid NUL passwd, an empty authcid or passwd, a field
                     // over max_plain_field_bytes, or not base64 (decode_plain only)
  authzid_mismatch,  // an authzid other than the authcid: acting for another user is refused
};

// Parses a decoded PLAIN message (RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL
// passwd). Exactly two NULs; authcid and passwd non-empty; each field at most
// max_plain_field_bytes. The bytes are not checked for UTF-8: the credential check decides.
std::variant<PlainCredentials, PlainError> parse_plain(std::string_view message);

// Decodes a base64 PLAIN client response (RFC 4648 §4, padded, no whitespace) and parses it as
// parse_plain() does. nullopt for any failure, and then, when `why` is given, the reason in it
// (malformed for bad base64 too).
std::optional<PlainCredentials> decode_plain(std::string_view base64, PlainError* why = nullptr);

// The XOAUTH2 initial client response: base64("user=" user "\x01auth=Bearer " token "\x01\x01").
// Precondition: neither `user` nor `token` contains \x01; if one does, the result is an empty
// Secret (which no server accepts), since the string would be ambiguous.
Secret xoauth2_initial_response(std::string_view user, const Secret& token);

}  // namespace iop::auth
