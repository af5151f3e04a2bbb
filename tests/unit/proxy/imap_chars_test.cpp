#include "proxy/imap_chars.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iop::proxy::imap {
namespace {

static_assert(is_atom("CAPABILITY") && is_atom("AUTH=PLAIN") && !is_atom(""));
static_assert(is_tag("a001") && !is_tag("a+1"));

// The grammar written out as plain sets, independent of the helpers' composition.
bool expected_atom_char(int c) {
  if (c <= 0x20 || c >= 0x7f) {
    return false;  // CTL, SP, DEL, 8-bit
  }
  return std::string("(){%*\"\\]").find(static_cast<char>(c)) == std::string::npos;
}

TEST(ImapChars, AtomCharIsCharMinusAtomSpecials) {
  for (int c = 0; c < 256; ++c) {
    EXPECT_EQ(is_atom_char(static_cast<unsigned char>(c)), expected_atom_char(c)) << c;
  }
}

TEST(ImapChars, AstringAndTagChars) {
  for (int c = 0; c < 256; ++c) {
    const auto u = static_cast<unsigned char>(c);
    EXPECT_EQ(is_astring_char(u), expected_atom_char(c) || c == ']') << c;
    EXPECT_EQ(is_tag_char(u), (expected_atom_char(c) || c == ']') && c != '+') << c;
  }
}

TEST(ImapChars, Specials) {
  EXPECT_TRUE(is_quoted_special('"'));
  EXPECT_TRUE(is_quoted_special('\\'));
  EXPECT_FALSE(is_quoted_special('\''));
  EXPECT_TRUE(is_resp_special(']'));
  EXPECT_FALSE(is_resp_special('['));
  EXPECT_TRUE(is_list_wildcard('%'));
  EXPECT_TRUE(is_list_wildcard('*'));
  EXPECT_TRUE(is_atom_special(' '));
  EXPECT_TRUE(is_atom_special('\x7f'));
  EXPECT_TRUE(is_atom_special('\0'));
  EXPECT_FALSE(is_atom_special('['));  // "[" is an ATOM-CHAR ("BODY[")
  EXPECT_TRUE(is_ctl(0x00) && is_ctl(0x1f) && is_ctl(0x7f) && !is_ctl(0x20));
  EXPECT_TRUE(!is_char(0x00) && is_char(0x01) && is_char(0x7f) && !is_char(0x80));
}

TEST(ImapChars, AtomsAndTags) {
  EXPECT_TRUE(is_atom("IMAP4rev1"));
  EXPECT_TRUE(is_atom("BODY["));
  EXPECT_FALSE(is_atom("a b"));
  EXPECT_FALSE(is_atom("x]"));
  EXPECT_FALSE(is_atom("caf\xc3\xa9"));
  EXPECT_TRUE(is_tag("A]1"));  // resp-specials are allowed in a tag
  EXPECT_FALSE(is_tag(""));
  EXPECT_FALSE(is_tag("*"));
  EXPECT_FALSE(is_tag("a{1"));
}

}  // namespace
}  // namespace iop::proxy::imap
