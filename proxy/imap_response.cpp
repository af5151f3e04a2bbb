#include "proxy/imap_response.hpp"

#include <algorithm>
#include <charconv>

#include "common/ascii.hpp"
#include "proxy/imap_chars.hpp"

namespace iop::proxy {
namespace {

std::string_view next_word(std::string_view& rest) {
  const auto space = rest.find(' ');
  const auto word = rest.substr(0, space);
  rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
  return word;
}

}  // namespace

std::optional<ResponseLine> parse_response_line(std::string_view line) {
  if (line.empty()) {
    return std::nullopt;
  }
  ResponseLine out;
  std::string_view rest = line;
  if (line.front() == '+') {
    out.kind = ResponseKind::continuation;
    out.text = std::string(line.size() > 1 && line[1] == ' ' ? line.substr(2) : line.substr(1));
    return out;
  }
  const auto first = next_word(rest);
  if (first.empty()) {
    return std::nullopt;
  }
  if (first == "*") {
    out.kind = ResponseKind::untagged;
  } else {
    out.kind = ResponseKind::tagged;
    out.tag = std::string(first);
  }
  const auto status = next_word(rest);
  if (status.empty()) {
    return std::nullopt;
  }
  out.status = ascii_uppered(status);
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close != std::string_view::npos) {
      out.code = std::string(rest.substr(1, close - 1));
      rest = rest.substr(close + 1);
      if (!rest.empty() && rest.front() == ' ') {
        rest.remove_prefix(1);
      }
    }
  }
  out.text = std::string(rest);
  return out;
}

std::vector<std::string> split_capabilities(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    const auto word = next_word(list);
    if (!word.empty()) {
      out.emplace_back(word);
    }
  }
  return out;
}

std::optional<std::vector<std::string>> capabilities_in(const ResponseLine& line) {
  if (line.kind == ResponseKind::untagged && line.status == "CAPABILITY") {
    return split_capabilities(line.text);
  }
  std::string_view code = line.code;
  if (ascii_iequals(next_word(code), "CAPABILITY")) {
    return split_capabilities(code);
  }
  return std::nullopt;
}

bool has_capability(const std::vector<std::string>& caps, std::string_view name) {
  return std::any_of(caps.begin(), caps.end(),
                     [&](const std::string& c) { return ascii_iequals(c, name); });
}

std::optional<std::string> quote_string(std::string_view value) {
  std::string out = "\"";
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\r' || c == '\n' || c == '\0' || u >= 0x80) {
      return std::nullopt;
    }
    if (imap::is_quoted_special(u)) {  // RFC 9051 §4.3: escaped inside a quoted string
      out += '\\';
    }
    out += c;
  }
  out += '"';
  return out;
}

std::optional<std::size_t> trailing_literal_size(std::string_view line) {
  if (line.empty() || line.back() != '}') {
    return std::nullopt;
  }
  const auto open = line.rfind('{');
  if (open == std::string_view::npos) {
    return std::nullopt;
  }
  auto digits = line.substr(open + 1, line.size() - open - 2);
  if (!digits.empty() && digits.back() == '+') {
    digits.remove_suffix(1);
  }
  std::size_t size = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), size);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) {
    return std::nullopt;
  }
  return size;
}

}  // namespace iop::proxy
