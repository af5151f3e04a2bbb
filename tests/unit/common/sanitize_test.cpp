#include "common/sanitize.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iop {
namespace {

TEST(SanitizeForLog, PrintableAsciiIsKeptAsIs) {
  EXPECT_EQ(sanitize_for_log("alice@example.com"), "alice@example.com");
  EXPECT_EQ(sanitize_for_log("said \"no\" (\\ ok)"), "said \"no\" (\\ ok)");
  EXPECT_EQ(sanitize_for_log(""), "");
}

TEST(SanitizeForLog, LineBreaksAndControlBytesAreVisibleEscapes) {
  EXPECT_EQ(sanitize_for_log("bob\r\n2025-01-01 INFO forged"), "bob\\r\\n2025-01-01 INFO forged");
  EXPECT_EQ(sanitize_for_log("a\nb"), "a\\nb");
  EXPECT_EQ(sanitize_for_log("a\tb"), "a\\tb");
  EXPECT_EQ(sanitize_for_log(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(sanitize_for_log("mallory\x1b[31m"), "mallory\\x1b[31m");
  EXPECT_EQ(sanitize_for_log("\x7f"), "\\x7f");
}

TEST(SanitizeForLog, WellFormedUtf8IsKept) {
  EXPECT_EQ(sanitize_for_log("j\xc3\xb6rg"), "j\xc3\xb6rg");            // ö
  EXPECT_EQ(sanitize_for_log("\xe2\x82\xac"), "\xe2\x82\xac");          // €
  EXPECT_EQ(sanitize_for_log("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");  // U+1F600
}

TEST(SanitizeForLog, IllFormedUtf8IsEscapedByteByByte) {
  EXPECT_EQ(sanitize_for_log("\xff"), "\\xff");
  EXPECT_EQ(sanitize_for_log("\xc0\xaf"), "\\xc0\\xaf");                    // overlong "/"
  EXPECT_EQ(sanitize_for_log("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a surrogate
  EXPECT_EQ(sanitize_for_log("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(sanitize_for_log("a\xc3"), "a\\xc3");                           // cut short
  EXPECT_EQ(sanitize_for_log("\xc3(x"), "\\xc3(x");
}

TEST(SanitizeForLog, CodePointsATerminalActsOnAreEscaped) {
  EXPECT_EQ(sanitize_for_log("\xc2\x9b"
                             "31m"),
            "\\xc2\\x9b31m");  // C1 CSI
  EXPECT_EQ(sanitize_for_log("a\xe2\x80\xa8"
                             "b"),
            "a\\xe2\\x80\\xa8b");                                  // U+2028
  EXPECT_EQ(sanitize_for_log("\xe2\x80\xae"), "\\xe2\\x80\\xae");  // U+202E RLO
  EXPECT_EQ(sanitize_for_log("\xe2\x81\xa6"), "\\xe2\\x81\\xa6");  // U+2066 LRI
}

TEST(SanitizeForLog, LongTextIsCutWithAMarker) {
  const std::string user(64 * 1024, 'u');
  const auto out = sanitize_for_log(user);
  EXPECT_EQ(out, std::string(256, 'u') + "\xe2\x80\xa6(+65280 bytes)");
  EXPECT_EQ(sanitize_for_log("abcdef", 3), "abc\xe2\x80\xa6(+3 bytes)");
  EXPECT_EQ(sanitize_for_log("abc", 3), "abc");
}

TEST(SanitizeForLog, TheCapCountsOutputAndNeverSplitsAnEscapeOrACharacter) {
  // "ab" then CR: the escape needs 2 bytes, only 1 is left.
  EXPECT_EQ(sanitize_for_log("ab\rcd", 3), "ab\xe2\x80\xa6(+3 bytes)");
  // "a" then a 2-byte character with room for one byte.
  EXPECT_EQ(sanitize_for_log("a\xc3\xb6", 2), "a\xe2\x80\xa6(+2 bytes)");
  EXPECT_EQ(sanitize_for_log("\x01\x02", 4), "\\x01\xe2\x80\xa6(+1 bytes)");
  EXPECT_EQ(sanitize_for_log(std::string(10'000, '\n'), std::string_view::npos).size(), 20'000u);
}

TEST(SanitizeForLog, IsIdempotent) {
  for (const std::string& text :
       {std::string("a\r\nb\x1b[0m\xff\xc3\xb6\xe2\x80\xae\\x"), std::string(300, '\x01')}) {
    const auto once = sanitize_for_log(text, std::string_view::npos);
    EXPECT_EQ(sanitize_for_log(once, std::string_view::npos), once);
    const auto cut = sanitize_for_log(text);
    EXPECT_EQ(sanitize_for_log(cut, std::string_view::npos), cut);
  }
}

TEST(SanitizeForLog, OutputHasNoControlByteForAnyInputByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const auto out = sanitize_for_log(all, std::string_view::npos);
  for (const char c : out) {
    const auto u = static_cast<unsigned char>(c);
    EXPECT_TRUE(u >= 0x20 && u != 0x7f) << static_cast<int>(u);
  }
}

TEST(SanitizeForProtocol, OnlyPrintableAsciiComesOut) {
  EXPECT_EQ(sanitize_for_protocol("535 5.7.139 ok"), "535 5.7.139 ok");
  // UTF-8 a log keeps is escaped byte by byte here, and so are CR LF.
  EXPECT_EQ(sanitize_for_protocol("caf\xc3\xa9\r\n"), "caf\\xc3\\xa9\\r\\n");
  EXPECT_EQ(sanitize_for_protocol(std::string(20, 'a'), 10), "aaaaaaaaaa...(+10 bytes)");
  for (int b = 0; b < 256; ++b) {
    const std::string in(1, static_cast<char>(b));
    for (const char c : sanitize_for_protocol(in + "\xe2\x80\xae" + in, 4)) {
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "byte " << b;
    }
  }
}

TEST(PrintableUsername, KeepsEmailsAndOnlyTheLengthOfAnythingElse) {
  EXPECT_EQ(printable_username("Alice@Contoso.com"), "Alice@Contoso.com");
  EXPECT_EQ(printable_username(""), "");
  // A password typed into the user field, a forged log line, a 64 KiB literal.
  EXPECT_EQ(printable_username("hunter2"), "<not an email, 7 bytes>");
  EXPECT_EQ(printable_username("bob\r\nINFO forged"), "<not an email, 16 bytes>");
  EXPECT_EQ(printable_username(std::string(65'536, 'x')), "<not an email, 65536 bytes>");
  EXPECT_EQ(printable_username("a b@x.com"), "<not an email, 9 bytes>");
  // Idempotent: the placeholder (as an audit row stores it) passes through unchanged.
  EXPECT_EQ(printable_username("<not an email, 7 bytes>"), "<not an email, 7 bytes>");
  EXPECT_EQ(printable_username("<not an email, x bytes>"), "<not an email, 23 bytes>");
}

}  // namespace
}  // namespace iop
