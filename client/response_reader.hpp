#pragma once
// IMAP server responses framed from a byte stream (RFC 9051 §2.2.2, §7): what the client library
// reads after its login. Pure: bytes in, responses out, no I/O.
//
// A response is a line ended by CRLF, unless the line ends with a literal's length: `{N}`
// (RFC 9051 §4.3), `{N+}` (RFC 7888 non-synchronizing form, which a server has no reason to
// send but costs nothing to accept) or `~{N}` (literal8, RFC 3516 BINARY). Then exactly N bytes
// follow, whatever they hold (CR, LF, NUL, anything: binary-safe), and the response goes on
// with the next line. So a FETCH of a message is one response whose text holds `{N}` and whose
// literal holds the N bytes.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iop::client {

enum class ResponseKind {
  untagged,      // "* ..." (data, status or BYE)
  continuation,  // "+ ..." (the server waits for more: a literal, IDLE)
  tagged,        // "TAG OK|NO|BAD ..." (a command's completion)
};

enum class TaggedStatus { ok, no, bad };

struct ServerResponse {
  ResponseKind kind = ResponseKind::untagged;
  // The response's lines without their final CRLF, joined by CRLF where a literal follows; each
  // literal's bytes are NOT in `text`, only its `{N}` marker: `* 1 FETCH (BODY[] {5}\r\n)`.
  std::string text;
  // Each literal's bytes, in order.
  std::vector<std::string> literals;
  // Tagged responses only: the tag, the status and the text after the status
  // ("[READ-WRITE] SELECT completed"); for the others, empty and ok.
  std::string tag;
  TaggedStatus status = TaggedStatus::ok;
  std::string status_text;
};

// Bounds on what a server may make the client hold. A line is the text between two CRLFs or
// literals; a response is all its lines and literals.
struct ResponseLimits {
  std::size_t max_line_bytes = 8 * 1024 * 1024;  // a SEARCH answer of a million UIDs fits
  std::size_t max_literal_bytes = std::size_t{1} << 30;
  std::size_t max_response_bytes = std::size_t{1} << 31;
};

// Reads responses from a byte stream cut anywhere. feed() appends bytes; next() returns the next
// complete response, nullopt when more bytes are needed. After a malformed response or a limit
// exceeded, error() is set and next() returns nothing more.
class ResponseReader {
 public:
  explicit ResponseReader(ResponseLimits limits = {}) : limits_(limits) {}

  void feed(std::string_view bytes);
  std::optional<ServerResponse> next();

  [[nodiscard]] const std::optional<std::string>& error() const { return error_; }
  // Bytes received and not yet part of a returned response (a partly read one included).
  [[nodiscard]] std::string_view buffered() const;
  // Hands the buffered bytes over and forgets them (and the partly read response).
  std::string take_buffered();

 private:
  std::optional<ServerResponse> fail(std::string reason);
  std::optional<ServerResponse> finish();

  ResponseLimits limits_;
  std::string buffer_;
  std::size_t consumed_ = 0;  // bytes of buffer_ already returned as responses
  std::size_t scan_ = 0;      // the next byte not yet parsed (>= consumed_)
  ServerResponse partial_;    // the lines and literals of the response read so far
  std::size_t partial_bytes_ = 0;
  std::size_t literal_left_ = 0;  // > 0: reading a literal's bytes
  bool in_literal_ = false;
  std::optional<std::string> error_;
};

// The length of the literal announced at the end of `line` (a line without its CRLF): `{N}`,
// `{N+}` or `~{N}`; nullopt when the line does not end with one. A length too large for
// size_t is SIZE_MAX (any limit then rejects it). Pure.
std::optional<std::size_t> trailing_literal_length(std::string_view line);

}  // namespace iop::client
