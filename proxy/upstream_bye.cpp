#include "proxy/upstream_bye.hpp"

#include "common/sanitize.hpp"
#include "proxy/imap_chars.hpp"

namespace iop::proxy {

namespace {

// One whole tagged line: tag SP ... CRLF (RFC 9051 §7.1, tag = 1*<ASTRING-CHAR except "+">). A
// ")" closing a FETCH whose body ended in "* BYE ..." is not one.
bool is_one_tagged_line(std::string_view s) {
  const auto sp = s.find(' ');
  return sp != std::string_view::npos && imap::is_tag(s.substr(0, sp)) && s.ends_with("\r\n") &&
         s.find("\r\n") == s.size() - 2;
}

}  // namespace

std::optional<std::string> find_bye(std::string_view data) {
  std::optional<std::string> found;
  std::size_t pos = 0;
  while ((pos = data.find("* BYE", pos)) != std::string_view::npos) {
    if (pos == 0 || data[pos - 1] == '\n') {
      const auto end = data.find("\r\n", pos);
      if (end == std::string_view::npos) {
        break;
      }
      auto text = data.substr(pos + 5, end - pos - 5);
      if (!text.empty() && text.front() == ' ') {
        text.remove_prefix(1);
      }
      // The server's words go into a log line and an audit row: a bare LF or an escape
      // sequence in them must not forge or colour a line there.
      found = sanitize_for_log(text, 200);
    }
    pos += 5;
  }
  return found;
}

std::optional<std::string> last_bye(std::string_view tail) {
  // Only data that ends a line can end with a BYE: most chunks of a bulk transfer end mid-line
  // and need no search (which profiling found in 2-3 % of the relay's CPU).
  if (!tail.ends_with("\r\n")) {
    return std::nullopt;
  }
  const auto at = tail.rfind("* BYE");
  const auto line_end = at == std::string_view::npos ? at : tail.find("\r\n", at);
  if (line_end == std::string_view::npos) {
    return std::nullopt;
  }
  const auto after = tail.substr(line_end + 2);
  const bool last = after.empty() || is_one_tagged_line(after);
  return last ? find_bye(tail.substr(at == 0 ? 0 : at - 1)) : std::nullopt;
}

}  // namespace iop::proxy
