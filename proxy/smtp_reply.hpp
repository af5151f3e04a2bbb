#pragma once
// SMTP replies (RFC 5321 §4.2): what the submission side reads from the upstream before the
// session is relayed, and how it writes its own. Pure.
//
//   Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF
//
// A reply is complete at the first line whose code is followed by a space (or nothing). Every
// line of a multiline reply must carry the same code (§4.2.1).

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iop::proxy::smtp {

struct Reply {
  int code = 0;                    // 200..599
  std::vector<std::string> lines;  // the text of each line, without code, separator and CRLF

  [[nodiscard]] bool positive() const { return code >= 200 && code < 300; }
  [[nodiscard]] bool intermediate() const { return code >= 300 && code < 400; }
  [[nodiscard]] bool transient() const { return code >= 400 && code < 500; }
  // All lines joined with " ", for logs and error messages (unsanitized: callers sanitize).
  [[nodiscard]] std::string text() const;
};

// Bounds on what an upstream may send before the session is relayed. RFC 5321 §4.5.3.1.5 sets
// 512 octets per reply line; EHLO lines of real servers stay well inside 1,000, so 4,096 leaves
// room without letting a hostile server grow the process (issue #7, item 3).
struct ReplyLimits {
  std::size_t max_line_bytes = 4096;
  std::size_t max_lines = 100;
};

// Reads replies from a byte stream cut anywhere. feed() appends bytes; next() returns the next
// complete reply, nullopt when more bytes are needed. After a malformed line or a limit
// exceeded, error() is set and next() returns nothing more.
class ReplyReader {
 public:
  explicit ReplyReader(ReplyLimits limits = {}) : limits_(limits) {}

  void feed(std::string_view bytes);
  std::optional<Reply> next();

  [[nodiscard]] const std::optional<std::string>& error() const { return error_; }
  // Bytes received and not yet part of a returned reply (after the last reply: what the server
  // sent beyond it).
  [[nodiscard]] std::string_view buffered() const;
  // Hands the buffered bytes over and forgets them.
  std::string take_buffered();

 private:
  ReplyLimits limits_;
  std::string buffer_;
  std::size_t consumed_ = 0;  // bytes of buffer_ already returned as replies
  std::size_t scan_ = 0;      // start of the first line not yet parsed (>= consumed_)
  Reply partial_;             // the lines of a multiline reply read so far
  std::optional<std::string> error_;
};

// Formats a reply: every line but the last as "CODE-text", the last as "CODE text", each ended
// with CRLF. An empty `lines` gives "CODE\r\n". Control characters in the text become spaces;
// a line is cut to 512 octets, CRLF included (RFC 5321 §4.5.3.1.5).
std::string format_reply(int code, const std::vector<std::string>& lines);
std::string format_reply(int code, std::string_view line);

}  // namespace iop::proxy::smtp
