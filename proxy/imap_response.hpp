#pragma once
// Reading an IMAP server's response lines (RFC 9051 §7), for the upstream connector. Pure.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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

// Bounds on what a server may send before its session is relayed.
struct FramerLimits {
  // One line of a response (the bytes between two CRLFs or a CRLF and a literal), and one literal.
  std::size_t max_line_bytes = std::size_t{1} << 20;
  // Every byte of every response framed so far, CRLFs and literals included.
  std::size_t max_total_bytes = std::size_t{4} << 20;
};

// Frames a server's bytes into responses: a line ended by CRLF or, when the line ends with a
// literal's size (`{N}` or `{N+}`, RFC 9051 §4.3), the line, CRLF, exactly N bytes, and the rest
// of the response after them, as one string (the way parse_response_line takes it). A bare LF is
// an ordinary byte of the line.
//
// The limits are checked at the very byte that exceeds them, so the same bytes cut into any reads
// give the same responses and the same failure (the read boundaries never decide; when one byte
// breaks both limits, line_too_long wins). Only the bytes of the responses returned are consumed:
// what follows the last one stays in the caller's view (after a login, the client's).
class ResponseFramer {
 public:
  enum class Status {
    need_more,      // `in` is used up: call again with the next read
    response,       // take_response() has one
    line_too_long,  // a line or an announced literal over max_line_bytes
    over_total,     // more than max_total_bytes
  };

  explicit ResponseFramer(FramerLimits limits = {}) : limits_(limits) {}

  // Consumes bytes from the front of `in` up to the end of the next response. After a limit is
  // hit, returns that status again and consumes nothing.
  Status next(std::string_view& in);

  // The response of the last Status::response, without its final CRLF, moved out.
  std::string take_response() { return std::exchange(response_, {}); }

  // Bytes consumed so far (the responses returned and the one being read).
  [[nodiscard]] std::size_t total() const { return total_; }

 private:
  Status fail(Status status) { return failed_ = status; }

  FramerLimits limits_;
  std::string line_;              // the response being read, parts and literals so far
  std::size_t part_start_ = 0;    // where in line_ its current line begins
  std::size_t literal_left_ = 0;  // > 0: bytes of a literal still to come
  std::size_t total_ = 0;
  std::string response_;
  Status failed_ = Status::need_more;  // a limit once hit, for good
};

}  // namespace iop::proxy
