#include "proxy/responses.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iop::proxy {
namespace {

TEST(Responses, Tagged) {
  EXPECT_EQ(tagged_ok("a1", "NOOP completed"), "a1 OK NOOP completed\r\n");
  EXPECT_EQ(tagged_no("a2", "Authentication failed", "AUTHENTICATIONFAILED"),
            "a2 NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
  EXPECT_EQ(tagged_no("a3", "try later", "UNAVAILABLE"), "a3 NO [UNAVAILABLE] try later\r\n");
  EXPECT_EQ(tagged_bad("a4", "Unknown command"), "a4 BAD Unknown command\r\n");
  EXPECT_EQ(tagged("a5", Status::bad, "Literal too large", "TOOBIG"),
            "a5 BAD [TOOBIG] Literal too large\r\n");
}

TEST(Responses, UntaggedAndContinuation) {
  EXPECT_EQ(untagged_bad("Empty command line"), "* BAD Empty command line\r\n");
  EXPECT_EQ(bye("logging out"), "* BYE logging out\r\n");
  EXPECT_EQ(continuation(), "+ \r\n");
  EXPECT_EQ(continuation("Ready for literal data"), "+ Ready for literal data\r\n");
  EXPECT_EQ(id_line(), "* ID (\"name\" \"imap-oauth2-proxy\")\r\n");
}

TEST(Responses, NoLineBreakFromInputsEverReachesTheClient) {
  // An upstream or caller message with CRLF must not inject a second response line.
  const auto line = tagged_no("a1", "bad\r\na2 OK LOGIN completed", "AUTHENTICATIONFAILED");
  EXPECT_EQ(line, "a1 NO [AUTHENTICATIONFAILED] bad  a2 OK LOGIN completed\r\n");
  EXPECT_EQ(tagged_ok("a1", "x", "CAPABILITY A\r\nB]"), "a1 OK [CAPABILITY AB] x\r\n");
  EXPECT_EQ(bye(std::string("a\0b\x7f", 4)), "* BYE a b \r\n");
  EXPECT_EQ(continuation("x\ny"), "+ x y\r\n");
  for (const auto& out : {line, bye("\r\n\r\n"), continuation("\n")}) {
    EXPECT_EQ(out.find_first_of("\r\n"), out.size() - 2) << out;
  }
}

TEST(Responses, BadTagBecomesUntagged) {
  EXPECT_EQ(tagged_bad("", "x"), "* BAD x\r\n");
  EXPECT_EQ(tagged_bad("a b", "x"), "* BAD x\r\n");
  EXPECT_EQ(tagged_bad("a\r\n", "x"), "* BAD x\r\n");
  EXPECT_EQ(tagged_bad("a+", "x"), "* BAD x\r\n");
}

TEST(Responses, TextEdgeCases) {
  EXPECT_EQ(tagged_ok("a1", ""), "a1 OK completed\r\n");
  EXPECT_EQ(tagged_ok("a1", "\r\n"), "a1 OK completed\r\n");
  // Text that starts with "[" would read as a response code.
  EXPECT_EQ(tagged_no("a1", "[ALERT] fake"), "a1 NO (ALERT] fake\r\n");
  EXPECT_EQ(tagged_no("a1", std::string(2000, 'x')),
            "a1 NO " + std::string(max_response_text, 'x') + "\r\n");
}

TEST(Responses, Capabilities) {
  const std::vector<std::string> caps = {"IMAP4rev1", "LITERAL+", "AUTH=PLAIN", "bad cap",
                                         "x\r\n",     "",         "IDLE"};
  EXPECT_EQ(capability_code(caps), "CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN IDLE");
  EXPECT_EQ(capability_line(caps), "* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN IDLE\r\n");
  EXPECT_EQ(greeting({"IMAP4rev1", "STARTTLS", "LOGINDISABLED"}),
            "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] imap-oauth2-proxy ready\r\n");
}

}  // namespace
}  // namespace iop::proxy
