#include "common/sanitize.hpp"

#include <cstdint>

#include "common/ascii.hpp"
#include "common/email.hpp"

namespace iop {
namespace {

constexpr char hex_digits[] = "0123456789abcdef";

void append_hex(std::string& out, unsigned char byte) {
  out += "\\x";
  out += hex_digits[byte >> 4];
  out += hex_digits[byte & 0x0f];
}

// The length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629 §4, the table of
// well-formed byte sequences), with its code point; 0 when it is ill-formed.
std::size_t utf8_sequence(std::string_view s, char32_t& cp) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = b(0);
  std::size_t len = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    len = 2;
    cp = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    len = 3;
    cp = lead & 0x0f;
    lo = lead == 0xe0 ? 0xa0 : 0x80;  // no overlong forms
    hi = lead == 0xed ? 0x9f : 0xbf;  // no surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    len = 4;
    cp = lead & 0x07;
    lo = lead == 0xf0 ? 0x90 : 0x80;  // no overlong forms
    hi = lead == 0xf4 ? 0x8f : 0xbf;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < len) {
    return 0;
  }
  for (std::size_t i = 1; i < len; ++i) {
    const unsigned char c = b(i);
    if (c < (i == 1 ? lo : 0x80) || c > (i == 1 ? hi : 0xbf)) {
      return 0;
    }
    cp = (cp << 6) | (c & 0x3f);
  }
  return len;
}

// Code points a terminal or log viewer acts on rather than shows.
bool is_unsafe_code_point(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0xfeff;
}

}  // namespace

namespace {

std::string sanitize(std::string_view text, std::size_t max, bool ascii_only) {
  std::string out;
  out.reserve(text.size() < max ? text.size() : max);
  std::string piece;
  std::size_t i = 0;
  while (i < text.size()) {
    piece.clear();
    std::size_t used = 1;
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      piece += static_cast<char>(c);
    } else if (c == '\r') {
      piece += "\\r";
    } else if (c == '\n') {
      piece += "\\n";
    } else if (c == '\t') {
      piece += "\\t";
    } else if (c < 0x80 || ascii_only) {
      append_hex(piece, c);
    } else {
      char32_t cp = 0;
      const std::size_t len = utf8_sequence(text.substr(i), cp);
      if (len == 0) {
        append_hex(piece, c);  // the next bytes are looked at on their own
      } else {
        used = len;
        for (std::size_t k = 0; k < len; ++k) {
          if (is_unsafe_code_point(cp)) {
            append_hex(piece, static_cast<unsigned char>(text[i + k]));
          } else {
            piece += text[i + k];
          }
        }
      }
    }
    if (max != std::string_view::npos && out.size() + piece.size() > max) {
      break;
    }
    out += piece;
    i += used;
  }
  if (i < text.size()) {
    out += ascii_only ? "...(+" : "\xe2\x80\xa6(+";  // U+2026 HORIZONTAL ELLIPSIS
    out += std::to_string(text.size() - i);
    out += " bytes)";
  }
  return out;
}

}  // namespace

std::string sanitize_for_log(std::string_view text, std::size_t max) {
  return sanitize(text, max, false);
}

std::string sanitize_for_protocol(std::string_view text, std::size_t max) {
  return sanitize(text, max, true);
}

std::string printable_username(std::string_view typed) {
  constexpr std::string_view prefix = "<not an email, ";
  constexpr std::string_view suffix = " bytes>";
  if (typed.empty() || normalize_email(typed) ||
      (typed.starts_with(prefix) && typed.ends_with(suffix) &&
       all_ascii_digits(
           typed.substr(prefix.size(), typed.size() - prefix.size() - suffix.size())))) {
    return sanitize_for_log(typed);
  }
  return std::string(prefix) + std::to_string(typed.size()) + std::string(suffix);
}

}  // namespace iop
