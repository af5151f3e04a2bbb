#include "proxy/imap_response.hpp"

#include <gtest/gtest.h>

namespace iop::proxy {
namespace {

TEST(ImapResponse, ParsesTaggedUntaggedAndContinuation) {
  auto r = parse_response_line("a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, ResponseKind::tagged);
  EXPECT_EQ(r->tag, "a1");
  EXPECT_EQ(r->status, "OK");
  EXPECT_EQ(r->code, "CAPABILITY IMAP4rev1 IDLE");
  EXPECT_EQ(r->text, "Logged in");

  r = parse_response_line("* bye Session invalidated - AccessTokenExpired");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, ResponseKind::untagged);
  EXPECT_EQ(r->status, "BYE");
  EXPECT_EQ(r->text, "Session invalidated - AccessTokenExpired");

  r = parse_response_line("+ eyJzdGF0dXMiOiI0MDEifQ==");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, ResponseKind::continuation);
  EXPECT_EQ(r->text, "eyJzdGF0dXMiOiI0MDEifQ==");
  EXPECT_EQ(parse_response_line("+")->kind, ResponseKind::continuation);

  EXPECT_FALSE(parse_response_line("").has_value());
  EXPECT_FALSE(parse_response_line("a1").has_value());
}

TEST(ImapResponse, FindsCapabilitiesInCodesAndLines) {
  const auto caps =
      capabilities_in(*parse_response_line("* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2"));
  ASSERT_TRUE(caps.has_value());
  EXPECT_EQ(caps->size(), 3u);
  EXPECT_TRUE(has_capability(*caps, "sasl-ir"));
  EXPECT_FALSE(has_capability(*caps, "IDLE"));
  EXPECT_TRUE(capabilities_in(*parse_response_line("* OK [CAPABILITY IMAP4rev1] hi")).has_value());
  EXPECT_FALSE(capabilities_in(*parse_response_line("* OK [ALERT] hi")).has_value());
  EXPECT_FALSE(capabilities_in(*parse_response_line("* 3 EXISTS")).has_value());
}

TEST(ImapResponse, QuotesOrRefuses) {
  EXPECT_EQ(quote_string("alice@example.com"), "\"alice@example.com\"");
  EXPECT_EQ(quote_string("pa\"ss\\word"), "\"pa\\\"ss\\\\word\"");
  EXPECT_EQ(quote_string("line\r\nbreak"), std::nullopt);
  EXPECT_EQ(quote_string(std::string("nul\0x", 5)), std::nullopt);
  EXPECT_EQ(quote_string("caf\xc3\xa9"), std::nullopt);
}

TEST(ImapResponse, TrailingLiteralSizes) {
  EXPECT_EQ(trailing_literal_size("* 1 FETCH (BODY[] {1234}"), 1234u);
  EXPECT_EQ(trailing_literal_size("* LIST () \"/\" {5+}"), 5u);
  EXPECT_EQ(trailing_literal_size("* OK done"), std::nullopt);
  EXPECT_EQ(trailing_literal_size("{}"), std::nullopt);
  EXPECT_EQ(trailing_literal_size("{12a}"), std::nullopt);
  EXPECT_EQ(trailing_literal_size("{99999999999999999999999}"), std::nullopt);
}

}  // namespace
}  // namespace iop::proxy
