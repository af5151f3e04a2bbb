#include "proxy/imap_response.hpp"

#include <algorithm>
#include <charconv>

#include "common/ascii.hpp"
#include "common/line_limit.hpp"
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
  // Sized first, then written in one allocation: the value may be a password, and a string that
  // grows leaves copies of it in the blocks it frees.
  std::size_t size = value.size() + 2;
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\r' || c == '\n' || c == '\0' || u >= 0x80) {
      return std::nullopt;
    }
    if (imap::is_quoted_special(u)) {  // RFC 9051 §4.3: escaped inside a quoted string
      ++size;
    }
  }
  std::string out;
  out.reserve(size);
  out += '"';
  for (const char c : value) {
    if (imap::is_quoted_special(static_cast<unsigned char>(c))) {
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

ResponseFramer::Status ResponseFramer::next(std::string_view& in) {
  if (failed_ != Status::need_more) {
    return failed_;
  }
  while (!in.empty()) {
    // Each step takes no more than the next check needs, so a limit is found at the same byte
    // whatever the reads were: up to one byte past max_total_bytes, and in a line up to its first
    // LF and one byte past max_line_bytes (two when that byte is the CR of a CRLF).
    const std::size_t total_room = limits_.max_total_bytes - total_ + 1;  // total_ <= the max
    if (literal_left_ > 0) {
      const std::size_t n = std::min({in.size(), literal_left_, total_room});
      line_.append(in.substr(0, n));
      in.remove_prefix(n);
      total_ += n;
      literal_left_ -= n;
      if (total_ > limits_.max_total_bytes) {
        return fail(Status::over_total);
      }
      if (literal_left_ == 0) {
        part_start_ = line_.size();
      }
      continue;
    }
    const std::size_t part_size = line_.size() - part_start_;
    const std::size_t line_room =
        part_size <= limits_.max_line_bytes ? limits_.max_line_bytes + 1 - part_size : 1;
    const std::size_t lf = in.find('\n');
    const std::size_t n =
        std::min({lf == std::string_view::npos ? in.size() : lf + 1, line_room, total_room});
    line_.append(in.substr(0, n));
    in.remove_prefix(n);
    total_ += n;
    const std::string_view part = std::string_view(line_).substr(part_start_);
    if (!part.ends_with("\r\n")) {
      if (unfinished_line_too_long(part, limits_.max_line_bytes)) {
        return fail(Status::line_too_long);
      }
      if (total_ > limits_.max_total_bytes) {
        return fail(Status::over_total);
      }
      continue;
    }
    // A whole line (line_room kept it within max_line_bytes).
    const auto literal = trailing_literal_size(part.substr(0, part.size() - 2));
    if (literal && *literal > limits_.max_line_bytes) {
      return fail(Status::line_too_long);
    }
    if (total_ > limits_.max_total_bytes) {
      return fail(Status::over_total);
    }
    if (literal) {
      // The CRLF stays: the literal's bytes follow it in the response (RFC 9051 §4.3).
      literal_left_ = *literal;
      part_start_ = line_.size();
      continue;
    }
    line_.resize(line_.size() - 2);
    response_ = std::exchange(line_, {});
    part_start_ = 0;
    return Status::response;
  }
  return Status::need_more;
}

}  // namespace iop::proxy
