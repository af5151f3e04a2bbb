#include "proxy/upstream_bye.hpp"

#include <gtest/gtest.h>

namespace iop::proxy {
namespace {

TEST(FindBye, TheLastCompleteByeLineThatStartsALine) {
  EXPECT_EQ(find_bye("* BYE Session invalidated - AccessTokenExpired\r\n"),
            "Session invalidated - AccessTokenExpired");
  EXPECT_EQ(find_bye("* OK x\r\n* BYE first\r\n* BYE second\r\n"), "second");
  EXPECT_EQ(find_bye("* BYE\r\n"), "");
  // Not at the start of a line, or not complete: no BYE.
  EXPECT_EQ(find_bye("x* BYE no\r\n"), std::nullopt);
  EXPECT_EQ(find_bye("* BYE half a line"), std::nullopt);
  EXPECT_EQ(find_bye("* OK nothing\r\n"), std::nullopt);
}

TEST(FindBye, TheServersWordsAreSanitized) {
  const auto bye = find_bye("* BYE going\x1b[2J away\nforged: line\r\n");
  ASSERT_TRUE(bye.has_value());
  EXPECT_EQ(bye->find('\x1b'), std::string::npos) << *bye;
  EXPECT_EQ(bye->find('\n'), std::string::npos) << *bye;
}

TEST(LastBye, OnlyWhenTheByeIsTheLastThingSaid) {
  EXPECT_EQ(last_bye("* 1 EXISTS\r\n* BYE Session invalidated\r\n"), "Session invalidated");
  // The tagged completion of a LOGOUT may follow it.
  EXPECT_EQ(last_bye("* BYE logging out\r\na1 OK LOGOUT completed\r\n"), "logging out");
  // Another untagged line, more data, or a second tagged line: the session went on.
  EXPECT_EQ(last_bye("* BYE soon\r\n* 2 EXISTS\r\n"), std::nullopt);
  EXPECT_EQ(last_bye("* BYE soon\r\na1 OK done\r\na2 OK done\r\n"), std::nullopt);
  // Data that ends mid-line says nothing last yet, whatever came before.
  EXPECT_EQ(last_bye("* BYE going\r\na1 OK LOG"), std::nullopt);
  EXPECT_EQ(last_bye("* BYE going"), std::nullopt);
  EXPECT_EQ(last_bye(""), std::nullopt);
}

TEST(LastBye, AByeInsideAMessageBodyDoesNotCount) {
  const std::string body =
      "* 1 FETCH (BODY[] {40}\r\nquoted:\r\n* BYE not the server\r\nmore\r\n)\r\n";
  EXPECT_EQ(last_bye(body), std::nullopt);
  EXPECT_EQ(last_bye(body + "a1 OK FETCH completed\r\n"), std::nullopt);
  // A body that ends in a BYE line: the ")" closing the FETCH is not a tagged line.
  EXPECT_EQ(last_bye("* 1 FETCH (BODY[] {22}\r\n* BYE not the server\r\n)\r\n"), std::nullopt);
  EXPECT_EQ(last_bye("* BYE x\r\n+ go ahead\r\n"), std::nullopt);
  EXPECT_EQ(last_bye("* BYE x\r\n a1 OK\r\n"), std::nullopt);
}

TEST(LastBye, AByeSplitAcrossReadsIsFoundOnceItsLineIsComplete) {
  // The relay keeps the end of the previous reads and appends the new one (proxy/relay.cpp).
  std::string tail = "* 3 EXISTS\r\n* B";
  EXPECT_EQ(last_bye(tail), std::nullopt);
  tail += "YE Session invalidated - Access";
  EXPECT_EQ(last_bye(tail), std::nullopt);
  tail += "TokenExpired\r\n";
  EXPECT_EQ(last_bye(tail), "Session invalidated - AccessTokenExpired");
}

}  // namespace
}  // namespace iop::proxy
