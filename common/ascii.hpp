#pragma once
// ASCII character classes and case folding, locale-free and constexpr. Protocol keywords (IMAP
// command names, capabilities, SASL mechanism names, URL schemes and hosts, "Bearer", e-mail
// domains) compare without regard to ASCII case only; <cctype>'s std::tolower and std::isalpha
// follow the C locale of the process, and a byte >= 0x80 must never fold or match (issue #7).

#include <cstddef>
#include <string>
#include <string_view>

namespace iop {

constexpr bool is_ascii_upper(char c) noexcept { return c >= 'A' && c <= 'Z'; }
constexpr bool is_ascii_lower(char c) noexcept { return c >= 'a' && c <= 'z'; }
constexpr bool is_ascii_alpha(char c) noexcept { return is_ascii_upper(c) || is_ascii_lower(c); }
constexpr bool is_ascii_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_ascii_alnum(char c) noexcept { return is_ascii_alpha(c) || is_ascii_digit(c); }
constexpr bool is_ascii_hex(char c) noexcept {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The value of a hexadecimal digit (either case), or -1 for any other byte.
constexpr int ascii_hex_value(char c) noexcept {
  if (is_ascii_digit(c)) {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// `bytes` as lowercase hexadecimal, two digits a byte (digests and MACs in text columns).
constexpr std::string lower_hex(std::string_view bytes) {
  constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0x0f]);
  }
  return out;
}

constexpr char ascii_lower(char c) noexcept {
  return is_ascii_upper(c) ? static_cast<char>(c - 'A' + 'a') : c;
}
constexpr char ascii_upper(char c) noexcept {
  return is_ascii_lower(c) ? static_cast<char>(c - 'a' + 'A') : c;
}

// True if `s` is non-empty and every byte is an ASCII digit (no sign, no space).
constexpr bool all_ascii_digits(std::string_view s) noexcept {
  if (s.empty()) {
    return false;
  }
  for (const char c : s) {
    if (!is_ascii_digit(c)) {
      return false;
    }
  }
  return true;
}

// Copies of `s` with A-Z (a-z) folded; every other byte is kept as it is.
constexpr std::string ascii_lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = ascii_lower(c);
  }
  return out;
}
constexpr std::string ascii_uppered(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = ascii_upper(c);
  }
  return out;
}

constexpr bool ascii_iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) {
      return false;
    }
  }
  return true;
}

constexpr bool ascii_istarts_with(std::string_view text, std::string_view prefix) noexcept {
  return text.size() >= prefix.size() && ascii_iequals(text.substr(0, prefix.size()), prefix);
}

constexpr bool ascii_iends_with(std::string_view text, std::string_view suffix) noexcept {
  return text.size() >= suffix.size() &&
         ascii_iequals(text.substr(text.size() - suffix.size()), suffix);
}

constexpr bool ascii_icontains(std::string_view text, std::string_view part) noexcept {
  for (std::size_t at = 0; at + part.size() <= text.size(); ++at) {
    if (ascii_iequals(text.substr(at, part.size()), part)) {
      return true;
    }
  }
  return false;
}

}  // namespace iop
