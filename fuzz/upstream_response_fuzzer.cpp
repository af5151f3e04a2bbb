// libFuzzer target for reading the upstream server's responses before the session is relayed
// (STYLE.md §3.10): the greeting, CAPABILITY, the login's continuations and tagged result.
//
// proxy/imap_response.hpp's ResponseFramer frames the bytes into responses (a line ending in a
// literal announcement "{N}" continues with N bytes and the rest of the line); this target feeds
// it and runs the pure functions of proxy/imap_response.hpp on every response, the way
// UpstreamLoginMachine does (upstream_login_fuzzer drives the machine itself).
//
// Checks, besides the sanitizers:
// - the same bytes cut into arbitrary reads give the same responses as in one read, and the same
//   limit failure, if any (the limits are checked byte by byte), with the same bytes consumed;
// - a response is never longer than the bytes consumed for it, and without a literal it holds no
//   CRLF and at most max_line_bytes;
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

struct Framed {
  std::vector<std::string> responses;
  ResponseFramer::Status end = ResponseFramer::Status::need_more;
  std::size_t consumed = 0;
};

Framed frame(FramerLimits limits, const std::vector<std::string_view>& reads) {
  ResponseFramer framer(limits);
  Framed out;
  for (auto in : reads) {
    for (;;) {
      const auto before = in.size();
      const auto status = framer.next(in);
      out.consumed += before - in.size();
      require(framer.total() == out.consumed);
      if (status == ResponseFramer::Status::response) {
        out.responses.push_back(framer.take_response());
        continue;
      }
      if (status != ResponseFramer::Status::need_more) {
        out.end = status;
        return out;
      }
      require(in.empty());
      break;
    }
  }
  return out;
}

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
  FramerLimits limits;
  if ((data[0] & 1) != 0) {
    limits.max_line_bytes = 48;
    limits.max_total_bytes = 256;
  }
  const std::string_view input(reinterpret_cast<const char*>(data + 2), size - 2);

  const Framed whole = frame(limits, {input});
  const Framed chunked = frame(limits, iop::fuzz::cut_into_reads(input, data[1]));
  require(chunked.responses == whole.responses);
  require(chunked.end == whole.end);
  require(chunked.consumed == whole.consumed);
  require(whole.consumed <= input.size() && whole.consumed <= limits.max_total_bytes + 1);
  std::size_t framed = 0;
  for (const auto& r : whole.responses) {
    framed += r.size() + 2;
    if (r.find("\r\n") == std::string::npos) {
      require(r.size() <= limits.max_line_bytes);
    }
    check_line(r);
  }
  require(framed <= whole.consumed);
  return 0;
}
