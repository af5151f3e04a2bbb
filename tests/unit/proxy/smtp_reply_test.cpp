#include "proxy/smtp_reply.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/smtp_extensions.hpp"

namespace iop::proxy::smtp {
namespace {

// Reads every complete reply of `chunks`, fed in order; "code:line|line" each, then the error.
std::string read_all(const std::vector<std::string_view>& chunks, ReplyLimits limits = {}) {
  ReplyReader reader(limits);
  std::string out;
  for (const auto chunk : chunks) {
    reader.feed(chunk);
    while (auto reply = reader.next()) {
      out += std::to_string(reply->code) + ":";
      for (std::size_t i = 0; i < reply->lines.size(); ++i) {
        out += (i ? "|" : "") + reply->lines[i];
      }
      out += "\n";
    }
  }
  if (reader.error()) {
    out += "error: " + *reader.error() + "\n";
  }
  return out;
}

constexpr std::string_view ehlo =
    "220 mx.example ESMTP\r\n"
    "250-mx.example Hello\r\n"
    "250-SIZE 35882577\r\n"
    "250-8BITMIME\r\n"
    "250-AUTH LOGIN PLAIN XOAUTH2\r\n"
    "250 CHUNKING\r\n";

TEST(SmtpReplyReader, ReadsSingleAndMultilineRepliesAtEverySplit) {
  const std::string expected =
      "220:mx.example ESMTP\n"
      "250:mx.example Hello|SIZE 35882577|8BITMIME|AUTH LOGIN PLAIN XOAUTH2|CHUNKING\n";
  EXPECT_EQ(read_all({ehlo}), expected);
  for (std::size_t i = 0; i <= ehlo.size(); ++i) {
    EXPECT_EQ(read_all({ehlo.substr(0, i), ehlo.substr(i)}), expected) << "split at " << i;
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < ehlo.size(); ++i) {
    bytes.push_back(ehlo.substr(i, 1));
  }
  EXPECT_EQ(read_all(bytes), expected);
}

TEST(SmtpReplyReader, CodeWithoutTextAndBareLf) {
  EXPECT_EQ(read_all({"334\r\n235 2.7.0 ok\n"}), "334:\n235:2.7.0 ok\n");
}

TEST(SmtpReplyReader, RefusesMalformedAndMixedCodes) {
  EXPECT_EQ(read_all({"hello\r\n"}), "error: malformed reply line (not a three-digit code)\n");
  EXPECT_EQ(read_all({"250x\r\n"}), "error: malformed reply line (not a three-digit code)\n");
  EXPECT_EQ(read_all({"190 no\r\n"}), "error: malformed reply line (not a three-digit code)\n");
  EXPECT_EQ(read_all({"250-a\r\n251 b\r\n"}),
            "error: multiline reply changes its code from 250 to 251\n");
}

TEST(SmtpReplyReader, BoundsLineLengthAndLineCount) {
  ReplyLimits limits;
  limits.max_line_bytes = 16;
  limits.max_lines = 3;
  EXPECT_EQ(read_all({std::string(17, '2')}, limits), "error: reply line longer than 16 bytes\n");
  EXPECT_EQ(read_all({"250-a\r\n250-b\r\n250-c\r\n250 d\r\n"}, limits),
            "error: reply longer than 3 lines\n");
  // A line of exactly the limit is accepted at every split, the one between its CR and LF too.
  const std::string longest = "250 " + std::string(12, 'a') + "\r\n";
  for (std::size_t i = 0; i <= longest.size(); ++i) {
    EXPECT_EQ(
        read_all({std::string_view(longest).substr(0, i), std::string_view(longest).substr(i)},
                 limits),
        "250:" + std::string(12, 'a') + "\n")
        << "split at " << i;
  }
  // A hostile server cannot grow the buffer by sending a line that never ends.
  ReplyReader reader(limits);
  for (int i = 0; i < 100; ++i) {
    reader.feed("xxxxxxxx");
  }
  EXPECT_FALSE(reader.next());
  EXPECT_TRUE(reader.error());
}

TEST(SmtpReplyReader, KeepsBytesAfterTheLastReply) {
  ReplyReader reader;
  reader.feed("235 ok\r\n250 extra");
  ASSERT_TRUE(reader.next());
  EXPECT_EQ(reader.buffered(), "250 extra");
  EXPECT_EQ(reader.take_buffered(), "250 extra");
  EXPECT_EQ(reader.buffered(), "");
}

TEST(SmtpReplyFormat, MultilineAndControlCharacters) {
  EXPECT_EQ(format_reply(250, std::vector<std::string>{"host", "SIZE 10", "8BITMIME"}),
            "250-host\r\n250-SIZE 10\r\n250 8BITMIME\r\n");
  EXPECT_EQ(format_reply(535, "5.7.8 bad\r\n250 forged"), "535 5.7.8 bad  250 forged\r\n");
  EXPECT_EQ(format_reply(334, ""), "334 \r\n");
  // At most 512 octets a line, CRLF included (RFC 5321 §4.5.3.1.5).
  EXPECT_EQ(format_reply(535, std::string(600, 'x')).size(), 512u);
}

TEST(SmtpExtensions, ParsesEhloAndFindsMechanisms) {
  ReplyReader reader;
  reader.feed(ehlo);
  ASSERT_TRUE(reader.next());
  const auto reply = reader.next();
  ASSERT_TRUE(reply);
  const auto exts = parse_ehlo_reply(*reply);
  ASSERT_EQ(exts.size(), 4u);
  EXPECT_EQ(exts[0].keyword, "SIZE");
  EXPECT_EQ(exts[0].params, "35882577");
  EXPECT_TRUE(offers_sasl_mechanism(exts, "xoauth2"));
  EXPECT_FALSE(offers_sasl_mechanism(exts, "CRAM-MD5"));
  EXPECT_EQ(find_extension(exts, "chunking")->keyword, "CHUNKING");
  EXPECT_EQ(find_extension(exts, "STARTTLS"), nullptr);
  // The old "AUTH=" form.
  EXPECT_TRUE(
      offers_sasl_mechanism(parse_ehlo_reply(Reply{250, {"h", "AUTH=LOGIN XOAUTH2"}}), "XOAUTH2"));
}

TEST(SmtpExtensions, AdvertisesOnlyWhatTheRelayCanHonour) {
  const std::vector<Extension> upstream{
      {"SIZE", "157286400"},    {"PIPELINING", ""}, {"AUTH", "LOGIN XOAUTH2"}, {"STARTTLS", ""},
      {"XCLIENT", "ADDR NAME"}, {"BURL", "imap"},   {"SMTPUTF8", ""},          {"ETRN", ""}};
  EXPECT_EQ(advertised_extensions(upstream, false, true),
            (std::vector<std::string>{"SIZE 157286400", "PIPELINING", "SMTPUTF8",
                                      "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"}));
  EXPECT_EQ(advertised_extensions(upstream, true, false),
            (std::vector<std::string>{"SIZE 157286400", "PIPELINING", "SMTPUTF8",
                                      "ENHANCEDSTATUSCODES", "STARTTLS"}));
}

TEST(SmtpExtensions, SeveralUpstreamsShareWhatAllOfThemOffer) {
  // Dovecot-like and Microsoft-like upstreams behind one listener.
  const std::vector<Extension> dovecot = {
      {"PIPELINING", ""}, {"SIZE", "1048576"}, {"8BITMIME", ""}, {"ENHANCEDSTATUSCODES", ""}};
  const std::vector<Extension> microsoft = {
      {"SIZE", "37748736"}, {"PIPELINING", ""}, {"DSN", ""},      {"ENHANCEDSTATUSCODES", ""},
      {"8BITMIME", ""},     {"BINARYMIME", ""}, {"CHUNKING", ""}, {"SMTPUTF8", ""}};
  const auto shared = common_extensions({microsoft, dovecot});
  std::vector<std::string> names;
  for (const auto& e : shared) {
    names.push_back(e.keyword + (e.params.empty() ? "" : " " + e.params));
  }
  // The first upstream's order; the smaller SIZE; DSN, CHUNKING... only one of them has.
  EXPECT_EQ(names, (std::vector<std::string>{"SIZE 1048576", "PIPELINING", "ENHANCEDSTATUSCODES",
                                             "8BITMIME"}));
  // One upstream: itself. A SIZE without a fixed maximum (0) does not lower the other's.
  EXPECT_EQ(common_extensions({dovecot}).size(), dovecot.size());
  const auto size_only = common_extensions({{{"SIZE", "0"}}, {{"size", "2000"}}});
  ASSERT_EQ(size_only.size(), 1u);
  EXPECT_EQ(size_only[0].params, "2000");
  // Different parameters of another extension: not shared.
  EXPECT_TRUE(common_extensions({{{"DELIVERBY", "60"}}, {{"DELIVERBY", "120"}}}).empty());
  EXPECT_TRUE(common_extensions({}).empty());
}

}  // namespace
}  // namespace iop::proxy::smtp
