#pragma once
// Reading an IMAP server's response lines (RFC 9051 §7), for the upstream connector. Pure.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iop::proxy {

enum class ResponseKind { untagged, tagged, continuation };

struct ResponseLine {
  ResponseKind kind = ResponseKind::untagged;
  std::string tag;  // tagged responses only
  std::string
      status;  // first word after the tag or "*", upper-cased: OK, NO, BAD, BYE, CAPABILITY...
  std::string code;  // the response code inside [...], without brackets; empty when none
  std::string text;  // the human-readable rest
};

// Parses one response line (without its CRLF). nullopt for an empty or malformed line.
std::optional<ResponseLine> parse_response_line(std::string_view line);

// Splits a space-separated capability list ("IMAP4rev1 IDLE AUTH=PLAIN").
std::vector<std::string> split_capabilities(std::string_view list);

// The capabilities in a response: from a "CAPABILITY ..." response code or an untagged
// "* CAPABILITY ..." line; nullopt when the line carries none.
std::optional<std::vector<std::string>> capabilities_in(const ResponseLine& line);

// Whether `caps` contains `name`, compared case-insensitively.
bool has_capability(const std::vector<std::string>& caps, std::string_view name);

// `value` as an IMAP quoted string ("..." with \ and " escaped), or nullopt when it holds a
// character a quoted string cannot carry (CR, LF, NUL, 8-bit).
std::optional<std::string> quote_string(std::string_view value);

// The size announced by a literal at the end of `line` ("... {123}" or "{123+}"), if any.
std::optional<std::size_t> trailing_literal_size(std::string_view line);

}  // namespace iop::proxy
