// libFuzzer target for reading the upstream server's responses before the session is relayed
// (STYLE.md §3.10): the greeting, CAPABILITY, the login's continuations and tagged result.
//
// proxy/upstream.cpp's LineReader frames the bytes into response lines (a line ending in a
// literal announcement "{N}" continues with N bytes and the rest of the line) and hands each to
// parse_response_line. LineReader itself sits inside the Asio coroutine, so this target frames
// with a copy of its rules (ResponseFramer below: same trailing_literal_size, same limits) and
// then runs the real pure functions of proxy/imap_response.hpp on every line, the way
// connect_upstream() does. When the framing gets a pure home (issue #7 item 3 puts a total cap
// on it), this target should feed that instead of the copy.
//
// Checks, besides the sanitizers:
// - the same bytes cut into arbitrary reads give the same lines as in one read, up to the first
//   limit hit (the limits are checked per read, as in LineReader);
// - parse_response_line: nullopt exactly for an empty line or one without a status; a tag and a
//   status never hold a space; the status has no lower-case letter;
// - capabilities_in gives non-empty words without spaces, and has_capability finds each of them
//   in any ASCII case;
// - trailing_literal_size agrees with the line's last "{digits}" / "{digits+}";
// - quote_string gives a quoted string without CR, LF or NUL that unquotes to its input.
//
// First input byte: options (bit 0: small limits). Second byte: seed for the read sizes. The
// rest: the server's bytes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/ascii.hpp"
#include "fuzz/reads.hpp"
#include "fuzz/require.hpp"
#include "proxy/imap_response.hpp"

namespace {

using namespace iop::proxy;

using iop::fuzz::require;

struct Limits {
  std::size_t max_response_bytes = 1 << 20;  // upstream.cpp: per line without CRLF, per literal
  std::size_t max_total_bytes = 4 << 20;     // upstream.cpp: max_login_exchange_bytes
};

// LineReader's framing, fed by the caller instead of reading a socket.
class ResponseFramer {
 public:
  explicit ResponseFramer(Limits limits) : limits_(limits) {}

  // Appends one read; returns the responses it completed. After a limit is hit, nothing more.
  std::vector<std::string> feed(std::string_view bytes) {
    std::vector<std::string> out;
    // As LineReader::fill(): no read once max_total_bytes have been read.
    if (failed_ || total_ >= limits_.max_total_bytes) {
      failed_ = true;
      return out;
    }
    total_ += bytes.size();
    buffer_.append(bytes);
    for (;;) {
      if (literal_) {
        if (buffer_.size() < *literal_) {
          return out;
        }
        line_ += "\r\n";
        line_.append(buffer_, 0, *literal_);
        buffer_.erase(0, *literal_);
        literal_.reset();
      }
      const auto end = buffer_.find("\r\n");
      if (end == std::string::npos) {
        if (buffer_.size() > limits_.max_response_bytes) {
          failed_ = true;
        }
        return out;
      }
      std::string part = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      const auto literal = trailing_literal_size(part);
      line_ += part;
      if (!literal) {
        out.push_back(std::exchange(line_, {}));
        continue;
      }
      if (*literal > limits_.max_response_bytes) {
        failed_ = true;
        return out;
      }
      literal_ = *literal;
    }
  }

  [[nodiscard]] bool failed() const { return failed_; }

 private:
  Limits limits_;
  std::string buffer_;
  std::string line_;
  std::optional<std::size_t> literal_;
  std::size_t total_ = 0;
  bool failed_ = false;
};

std::optional<std::string> unquote(std::string_view q) {
  if (q.size() < 2 || q.front() != '"' || q.back() != '"') {
    return std::nullopt;
  }
  std::string out;
  for (std::size_t i = 1; i + 1 < q.size(); ++i) {
    if (q[i] == '\\') {
      ++i;
      if (i + 1 >= q.size() || (q[i] != '\\' && q[i] != '"')) {
        return std::nullopt;
      }
    } else if (q[i] == '"') {
      return std::nullopt;
    }
    out += q[i];
  }
  return out;
}

void check_literal_size(std::string_view line) {
  const auto size = trailing_literal_size(line);
  if (!size) {
    return;
  }
  require(!line.empty() && line.back() == '}');
  const auto open = line.rfind('{');
  require(open != std::string_view::npos);
  auto digits = line.substr(open + 1, line.size() - open - 2);
  if (!digits.empty() && digits.back() == '+') {
    digits.remove_suffix(1);
  }
  require(!digits.empty());
  std::size_t value = 0;
  for (const char c : digits) {
    require(c >= '0' && c <= '9');
    value = value * 10 + static_cast<std::size_t>(c - '0');
  }
  require(value == *size);
}

void check_quote(std::string_view value) {
  const auto quoted = quote_string(value);
  if (!quoted) {
    return;
  }
  require(quoted->find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos);
  const auto back = unquote(*quoted);
  require(back && *back == value);
}

void check_line(const std::string& text) {
  check_literal_size(text);
  const auto line = parse_response_line(text);
  if (!line) {
    // Empty, or a tag/"*" without a status word.
    require(text.empty() || text.front() != '+');
    return;
  }
  require(!text.empty());
  if (line->kind == ResponseKind::continuation) {
    require(text.front() == '+');
    return;
  }
  require(!line->status.empty());
  require(line->status.find(' ') == std::string::npos);
  require(line->status == iop::ascii_uppered(line->status));
  if (line->kind == ResponseKind::tagged) {
    require(!line->tag.empty() && line->tag != "*");
    require(line->tag.find(' ') == std::string::npos);
  } else {
    require(line->tag.empty());
  }
  if (const auto caps = capabilities_in(*line)) {
    for (const auto& cap : *caps) {
      require(!cap.empty() && cap.find(' ') == std::string::npos);
      require(has_capability(*caps, iop::ascii_lowered(cap)) &&
              has_capability(*caps, iop::ascii_uppered(cap)));
    }
  }
  check_quote(line->text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) {
    return 0;
  }
  Limits limits;
  if ((data[0] & 1) != 0) {
    limits.max_response_bytes = 48;
    limits.max_total_bytes = 256;
  }
  const std::string_view input(reinterpret_cast<const char*>(data + 2), size - 2);

  ResponseFramer chunked(limits);
  std::vector<std::string> chunked_lines;
  for (const auto piece : iop::fuzz::cut_into_reads(input, data[1])) {
    for (auto& l : chunked.feed(piece)) {
      chunked_lines.push_back(std::move(l));
    }
  }
  ResponseFramer whole(limits);
  const std::vector<std::string> whole_lines = whole.feed(input);

  for (const auto& l : whole_lines) {
    check_line(l);
  }
  // A limit is checked per read, so it can stop the two at different lines; before that, and
  // always when neither hit one, they agree.
  if (!chunked.failed() && !whole.failed()) {
    require(chunked_lines == whole_lines);
  } else {
    const auto n = std::min(chunked_lines.size(), whole_lines.size());
    for (std::size_t i = 0; i < n; ++i) {
      require(chunked_lines[i] == whole_lines[i]);
    }
  }
  return 0;
}
