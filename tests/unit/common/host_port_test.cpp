#include "common/host_port.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iop {

TEST(HostPort, NameAndPort) {
  const auto hp = parse_host_port("imap.example.com:993");
  ASSERT_TRUE(hp) << hp.error().message;
  EXPECT_EQ(hp->host, "imap.example.com");
  EXPECT_EQ(hp->port, 993);
}

TEST(HostPort, BracketedIpv6LosesItsBrackets) {
  const auto hp = parse_host_port("[::1]:1993");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 1993);
}

TEST(HostPort, UnbracketedIpv6UsesTheLastColon) {
  const auto hp = parse_host_port("::1:993");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 993);
}

TEST(HostPort, PortBounds) {
  EXPECT_TRUE(parse_host_port("h:1"));
  EXPECT_TRUE(parse_host_port("h:65535"));
  EXPECT_FALSE(parse_host_port("h:0"));
  EXPECT_FALSE(parse_host_port("h:65536"));
  EXPECT_FALSE(parse_host_port("h:-1"));
  EXPECT_FALSE(parse_host_port("h:99999999999999999999"));
}

TEST(HostPort, RejectsWhatIsNotHostColonPort) {
  for (const char* bad : {"", "host", ":993", "h:", "h:99x", "h: 99", "h:+99", "[::1]", "[::1]993",
                          "[::1:993", "[]:993"}) {
    const auto hp = parse_host_port(bad);
    EXPECT_FALSE(hp) << bad;
    if (!hp) {
      EXPECT_EQ(hp.error().code, Errc::config_error) << bad;
      EXPECT_NE(hp.error().message.find("expected"), std::string::npos) << bad;
    }
  }
}

}  // namespace iop
