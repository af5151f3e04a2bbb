#include "client/response_reader.hpp"

#include <algorithm>
#include <limits>

#include "common/ascii.hpp"
#include "common/line_limit.hpp"

namespace iop::client {

std::optional<std::size_t> trailing_literal_length(std::string_view line) {
  if (line.empty() || line.back() != '}') {
    return std::nullopt;
  }
  const auto open = line.rfind('{');
  if (open == std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view digits = line.substr(open + 1, line.size() - open - 2);
  // RFC 7888 §4: `{N+}` is the non-synchronizing form; the length is the same.
  if (!digits.empty() && digits.back() == '+') {
    digits.remove_suffix(1);
  }
  if (digits.empty()) {
    return std::nullopt;
  }
  std::size_t n = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    const auto d = static_cast<std::size_t>(c - '0');
    if (n > (std::numeric_limits<std::size_t>::max() - d) / 10) {
      return std::numeric_limits<std::size_t>::max();
    }
    n = n * 10 + d;
  }
  return n;
}

void ResponseReader::feed(std::string_view bytes) {
  if (error_) {
    return;
  }
  // Forget what earlier responses used; a response still being read stays whole, so that
  // take_buffered() can hand it over.
  if (consumed_ > 0) {
    buffer_.erase(0, consumed_);
    scan_ -= consumed_;
    consumed_ = 0;
  }
  buffer_.append(bytes);
}

std::optional<ServerResponse> ResponseReader::next() {
  if (error_) {
    return std::nullopt;
  }
  for (;;) {
    if (in_literal_) {
      // RFC 9051 §4.3: exactly N octets, whatever they are.
      const std::size_t take = std::min(buffer_.size() - scan_, literal_left_);
      partial_.literals.back().append(buffer_, scan_, take);
      scan_ += take;
      literal_left_ -= take;
      if (literal_left_ > 0) {
        return std::nullopt;
      }
      in_literal_ = false;
    }
    const auto eol = buffer_.find("\r\n", scan_);
    if (eol == std::string::npos) {
      if (unfinished_line_too_long(std::string_view(buffer_).substr(scan_),
                                   limits_.max_line_bytes)) {
        return fail("response line too long");
      }
      return std::nullopt;
    }
    const std::string_view line(buffer_.data() + scan_, eol - scan_);
    if (line.size() > limits_.max_line_bytes) {
      return fail("response line too long");
    }
    partial_bytes_ += line.size() + 2;
    if (partial_bytes_ > limits_.max_response_bytes) {
      return fail("response too long");
    }
    scan_ = eol + 2;
    if (const auto n = trailing_literal_length(line)) {
      if (*n > limits_.max_literal_bytes || *n > limits_.max_response_bytes - partial_bytes_) {
        return fail("literal too long");
      }
      partial_.text.append(line).append("\r\n");
      partial_.literals.emplace_back();
      partial_.literals.back().reserve(std::min<std::size_t>(*n, std::size_t{1} << 20));
      partial_bytes_ += *n;
      literal_left_ = *n;
      in_literal_ = true;
      continue;
    }
    partial_.text.append(line);
    consumed_ = scan_;
    return finish();
  }
}

std::optional<ServerResponse> ResponseReader::finish() {
  ServerResponse r = std::move(partial_);
  partial_ = ServerResponse{};
  partial_bytes_ = 0;
  const std::string_view text = r.text;
  // RFC 9051 §7: untagged responses start with "* ", continuations with "+" (a server may send
  // a bare "+" with no text, e.g. before IDLE updates).
  if (text.starts_with("* ")) {
    r.kind = ResponseKind::untagged;
    return r;
  }
  if (text.starts_with('+')) {
    r.kind = ResponseKind::continuation;
    return r;
  }
  const auto sp = text.find(' ');
  if (sp == 0 || sp == std::string_view::npos) {
    return fail("malformed response (neither untagged, continuation nor tagged)");
  }
  const std::string_view rest = text.substr(sp + 1);
  const auto sp2 = rest.find(' ');
  const std::string_view word = rest.substr(0, sp2);
  if (ascii_iequals(word, "OK")) {
    r.status = TaggedStatus::ok;
  } else if (ascii_iequals(word, "NO")) {
    r.status = TaggedStatus::no;
  } else if (ascii_iequals(word, "BAD")) {
    r.status = TaggedStatus::bad;
  } else {
    return fail("tagged response without OK, NO or BAD");
  }
  r.kind = ResponseKind::tagged;
  r.tag = std::string(text.substr(0, sp));
  r.status_text = sp2 == std::string_view::npos ? std::string() : std::string(rest.substr(sp2 + 1));
  return r;
}

std::optional<ServerResponse> ResponseReader::fail(std::string reason) {
  error_ = std::move(reason);
  return std::nullopt;
}

std::string_view ResponseReader::buffered() const {
  return std::string_view(buffer_).substr(consumed_);
}

std::string ResponseReader::take_buffered() {
  std::string out(buffered());
  buffer_.clear();
  consumed_ = 0;
  scan_ = 0;
  partial_ = ServerResponse{};
  partial_bytes_ = 0;
  literal_left_ = 0;
  in_literal_ = false;
  return out;
}

}  // namespace iop::client
