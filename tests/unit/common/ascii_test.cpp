#include "common/ascii.hpp"

#include <gtest/gtest.h>

#include <clocale>
#include <string>

namespace iop {
namespace {

// Compile-time checks: the helpers are constexpr.
static_assert(ascii_lower('Q') == 'q' && ascii_upper('q') == 'Q');
static_assert(ascii_iequals("AUTH=PLAIN", "auth=plain"));
static_assert(ascii_istarts_with("Retry-After: 5", "retry-after:"));

TEST(Ascii, FoldsOnlyAsciiLetters) {
  for (int i = 0; i < 256; ++i) {
    const char c = static_cast<char>(i);
    const bool upper = i >= 'A' && i <= 'Z';
    const bool lower = i >= 'a' && i <= 'z';
    EXPECT_EQ(ascii_lower(c), upper ? static_cast<char>(i + 32) : c) << i;
    EXPECT_EQ(ascii_upper(c), lower ? static_cast<char>(i - 32) : c) << i;
  }
}

TEST(Ascii, IgnoresTheProcessLocale) {
  // In Latin-1 locales std::tolower('\xC4') is '\xE4'; an IMAP keyword must not fold that way.
  const char* old = std::setlocale(LC_CTYPE, nullptr);
  const std::string saved = old != nullptr ? old : "C";
  std::setlocale(LC_CTYPE, "de_DE.ISO-8859-1");  // may be missing; the checks hold either way
  EXPECT_EQ(ascii_lower('\xC4'), '\xC4');
  EXPECT_FALSE(ascii_iequals("\xC4", "\xE4"));
  EXPECT_FALSE(is_ascii_alpha('\xC4'));
  std::setlocale(LC_CTYPE, saved.c_str());
}

TEST(Ascii, LoweredAndUpperedCopies) {
  EXPECT_EQ(ascii_lowered("Alice@Example.COM"), "alice@example.com");
  EXPECT_EQ(ascii_uppered("authenticate Plain"), "AUTHENTICATE PLAIN");
  EXPECT_EQ(ascii_lowered(std::string("A\0B", 3)), std::string("a\0b", 3));
  EXPECT_EQ(ascii_lowered("\xC3\x84"), "\xC3\x84");  // UTF-8 Ä stays as it is
}

TEST(Ascii, CaseInsensitiveComparison) {
  EXPECT_TRUE(ascii_iequals("", ""));
  EXPECT_TRUE(ascii_iequals("Bearer", "bEARER"));
  EXPECT_FALSE(ascii_iequals("Bearer", "Bearer "));
  EXPECT_FALSE(ascii_iequals("[", "{"));  // '[' + 32 == '{': only letters fold
  EXPECT_FALSE(ascii_iequals("@", "`"));
  EXPECT_TRUE(ascii_istarts_with("HTTPS://x", "https://"));
  EXPECT_FALSE(ascii_istarts_with("http", "https://"));
  EXPECT_TRUE(ascii_istarts_with("anything", ""));
}

TEST(Ascii, CharacterClasses) {
  int alpha = 0, digit = 0, hex = 0, alnum = 0;
  for (int i = 0; i < 256; ++i) {
    const char c = static_cast<char>(i);
    alpha += is_ascii_alpha(c);
    digit += is_ascii_digit(c);
    hex += is_ascii_hex(c);
    alnum += is_ascii_alnum(c);
  }
  EXPECT_EQ(alpha, 52);
  EXPECT_EQ(digit, 10);
  EXPECT_EQ(hex, 22);
  EXPECT_EQ(alnum, 62);
  EXPECT_FALSE(is_ascii_hex('g'));
  EXPECT_FALSE(is_ascii_digit('/'));
  EXPECT_FALSE(is_ascii_digit(':'));
}

TEST(Ascii, HexValues) {
  EXPECT_EQ(ascii_hex_value('0'), 0);
  EXPECT_EQ(ascii_hex_value('9'), 9);
  EXPECT_EQ(ascii_hex_value('a'), 10);
  EXPECT_EQ(ascii_hex_value('F'), 15);
  EXPECT_EQ(ascii_hex_value('g'), -1);
  EXPECT_EQ(ascii_hex_value('G'), -1);
  EXPECT_EQ(ascii_hex_value('\0'), -1);
}

TEST(Ascii, CaseInsensitiveEndsWithAndContains) {
  EXPECT_TRUE(ascii_iends_with("outlook.OFFICE365.com", "office365.COM"));
  EXPECT_TRUE(ascii_iends_with("x", ""));
  EXPECT_FALSE(ascii_iends_with("com", "a.com"));
  EXPECT_TRUE(ascii_icontains("The Microsoft Exchange IMAP4 service", "microsoft EXCHANGE"));
  EXPECT_TRUE(ascii_icontains("abc", ""));
  EXPECT_TRUE(ascii_icontains("", ""));
  EXPECT_FALSE(ascii_icontains("ab", "abc"));
  EXPECT_FALSE(ascii_icontains("Microsoft Exchang", "Microsoft Exchange"));
  // ASCII only: '[' (0x5b) is not '{' (0x7b), and bytes from 0x80 do not fold.
  EXPECT_FALSE(ascii_icontains("a[b", "A{B"));
  EXPECT_FALSE(ascii_icontains("\xc3\x84", "\xc3\xa4"));
  static_assert(ascii_icontains("Exchange", "CHANGE") && ascii_iends_with("a.B", ".b"));
}

TEST(Ascii, AllDigits) {
  EXPECT_TRUE(all_ascii_digits("0123456789"));
  EXPECT_FALSE(all_ascii_digits(""));
  EXPECT_FALSE(all_ascii_digits("-1"));
  EXPECT_FALSE(all_ascii_digits("1 "));
  EXPECT_FALSE(all_ascii_digits("+1"));
}

}  // namespace
}  // namespace iop
