#include "proxy/smtp_reply.hpp"

#include <fmt/format.h>

#include "common/line_limit.hpp"

namespace iop::proxy::smtp {

std::string Reply::text() const {
  std::string out;
  for (const auto& line : lines) {
    if (!out.empty()) {
      out += ' ';
    }
    out += line;
  }
  return out;
}

void ReplyReader::feed(std::string_view bytes) {
  if (error_) {
    return;
  }
  // Drop what earlier replies used before growing, so a long session does not keep it all.
  if (consumed_ > 0 && consumed_ == buffer_.size()) {
    buffer_.clear();
    scan_ = 0;
    consumed_ = 0;
  }
  buffer_.append(bytes);
}

std::optional<Reply> ReplyReader::next() {
  while (!error_) {
    const auto eol = buffer_.find('\n', scan_);
    if (eol == std::string::npos) {
      if (unfinished_line_too_long(std::string_view(buffer_).substr(scan_),
                                   limits_.max_line_bytes)) {
        error_ = fmt::format("reply line longer than {} bytes", limits_.max_line_bytes);
      }
      return std::nullopt;
    }
    // A bare LF is taken as the end of the line too: being strict here gains nothing, the
    // upstream is not relayed yet and its text is only logged.
    std::string_view line(buffer_.data() + scan_, eol - scan_);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.size() > limits_.max_line_bytes) {
      error_ = fmt::format("reply line longer than {} bytes", limits_.max_line_bytes);
      return std::nullopt;
    }
    // RFC 5321 §4.2: three digits, the first 2-5, the second 0-5; then SP, "-" or the end.
    const bool digits = line.size() >= 3 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' &&
                        line[1] <= '5' && line[2] >= '0' && line[2] <= '9';
    const char separator = line.size() > 3 ? line[3] : ' ';
    if (!digits || (separator != ' ' && separator != '-')) {
      error_ = "malformed reply line (not a three-digit code)";
      return std::nullopt;
    }
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (!partial_.lines.empty() && code != partial_.code) {
      error_ = fmt::format("multiline reply changes its code from {} to {}", partial_.code, code);
      return std::nullopt;
    }
    if (partial_.lines.size() >= limits_.max_lines) {
      error_ = fmt::format("reply longer than {} lines", limits_.max_lines);
      return std::nullopt;
    }
    partial_.code = code;
    partial_.lines.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view{});
    scan_ = eol + 1;
    if (separator == ' ') {
      consumed_ = scan_;
      Reply done = std::move(partial_);
      partial_ = Reply{};
      return done;
    }
  }
  return std::nullopt;
}

std::string_view ReplyReader::buffered() const {
  return std::string_view(buffer_).substr(consumed_);
}

std::string ReplyReader::take_buffered() {
  std::string out(buffered());
  buffer_.clear();
  scan_ = 0;
  consumed_ = 0;
  partial_ = Reply{};
  return out;
}

std::string format_reply(int code, const std::vector<std::string>& lines) {
  if (lines.empty()) {
    return fmt::format("{}\r\n", code);
  }
  // RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its code, separator and CRLF.
  constexpr std::size_t max_text = 512 - 3 - 1 - 2;
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string text = lines[i].substr(0, max_text);
    for (char& c : text) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        c = ' ';
      }
    }
    out += fmt::format("{}{}{}\r\n", code, i + 1 < lines.size() ? '-' : ' ', text);
  }
  return out;
}

std::string format_reply(int code, std::string_view line) {
  return format_reply(code, std::vector<std::string>{std::string(line)});
}

}  // namespace iop::proxy::smtp
