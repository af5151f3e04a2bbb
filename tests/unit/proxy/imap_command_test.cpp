#include "proxy/imap_command.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "proxy/imap_lexer.hpp"

namespace iop::proxy {
namespace {

Command parse(std::string_view line) {
  ImapLexer lexer;
  lexer.feed(line);
  LexResult r = lexer.next();
  EXPECT_EQ(r.status, LexStatus::command) << line;
  return std::move(r.command);
}

TEST(CommandSummary, LoginShowsUserHidesPassword) {
  const auto cmd = parse("a1 LOGIN alice@example.com \"hunter2 pw\"\r\n");
  EXPECT_EQ(cmd.log_summary(), "a1 LOGIN alice@example.com [redacted]");
}

TEST(CommandSummary, LoginWithLiteralsHidesPassword) {
  const auto cmd = parse("a1 login {17+}\r\nalice@example.com {7+}\r\nhunter2\r\n");
  const auto summary = cmd.log_summary();
  EXPECT_EQ(summary, "a1 LOGIN alice@example.com [redacted]");
  EXPECT_EQ(summary.find("hunter2"), std::string::npos);
}

TEST(CommandSummary, AuthenticateShowsMechanismOnly) {
  EXPECT_EQ(parse("a2 AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=\r\n").log_summary(),
            "a2 AUTHENTICATE PLAIN [redacted]");
  EXPECT_EQ(parse("a2 authenticate plain\r\n").log_summary(), "a2 AUTHENTICATE plain");
}

TEST(CommandSummary, OtherArgumentsRedacted) {
  EXPECT_EQ(parse("a3 SELECT INBOX\r\n").log_summary(), "a3 SELECT [redacted]");
  EXPECT_EQ(parse("a4 ID (\"name\" \"x\")\r\n").log_summary(), "a4 ID [redacted]");
  EXPECT_EQ(parse("a5 NOOP\r\n").log_summary(), "a5 NOOP");
}

TEST(CommandSummary, UserNameCannotForgeLogLines) {
  const auto cmd = parse("a1 LOGIN {25+}\r\nbob\r\nINFO fake \x1b[31m line pw\r\n");
  EXPECT_EQ(cmd.log_summary(), "a1 LOGIN bob\\r\\nINFO fake \\x1b[31m line [redacted]");
}

TEST(CommandSummary, LongFieldsAreCut) {
  const std::string user(100, 'u');
  const auto cmd = parse("a1 LOGIN " + user + " pw\r\n");
  EXPECT_EQ(cmd.log_summary(),
            "a1 LOGIN " + std::string(64, 'u') + "\xe2\x80\xa6(+36 bytes) [redacted]");
}

TEST(CommandSummary, EmptyUserAndOddShapes) {
  EXPECT_EQ(parse("a1 LOGIN \"\" pw\r\n").log_summary(), "a1 LOGIN \"\" [redacted]");
  EXPECT_EQ(parse("a1 LOGIN (x) pw\r\n").log_summary(), "a1 LOGIN [redacted]");
  EXPECT_EQ(parse("a1 LOGIN\r\n").log_summary(), "a1 LOGIN");
}

TEST(Argument, Predicates) {
  const auto cmd = parse("a1 X NIL nil \"NIL\" {3+}\r\nNIL ()\r\n");
  ASSERT_EQ(cmd.args.size(), 6u);
  EXPECT_TRUE(cmd.args[0].is_nil());
  EXPECT_TRUE(cmd.args[1].is_nil());
  EXPECT_FALSE(cmd.args[2].is_nil());  // a quoted "NIL" is a string
  EXPECT_FALSE(cmd.args[3].is_nil());
  EXPECT_TRUE(cmd.args[2].is_string());
  EXPECT_TRUE(cmd.args[3].is_string());
  EXPECT_FALSE(cmd.args[4].is_string());
  EXPECT_FALSE(cmd.args[5].is_string());
}

}  // namespace
}  // namespace iop::proxy
