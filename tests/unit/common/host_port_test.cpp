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

// parse_authority: the one URL-authority parser (auth/pkce, auth/http_client, storage/token_cache).

TEST(Authority, HostAlone) {
  const auto a = parse_authority("Login.Example.com");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "Login.Example.com");  // case is the caller's business
  EXPECT_FALSE(a->port);
  EXPECT_FALSE(a->bracketed);
}

TEST(Authority, HostAndPort) {
  const auto a = parse_authority("127.0.0.1:8080");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8080);
  EXPECT_FALSE(a->bracketed);
}

TEST(Authority, IpLiteralLosesItsBrackets) {
  const auto a = parse_authority("[::1]");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "::1");
  EXPECT_FALSE(a->port);
  EXPECT_TRUE(a->bracketed);

  const auto b = parse_authority("[fe80::1]:1");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->host, "fe80::1");
  EXPECT_EQ(b->port, 1);
  EXPECT_TRUE(b->bracketed);
}

TEST(Authority, UnbracketedHostEndsAtTheFirstColon) {
  // Unlike parse_host_port, an unbracketed IPv6 address is not guessed at: "::1" has no host.
  EXPECT_FALSE(parse_authority("::1"));
  const auto a = parse_authority("a:1:2");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().message, "the port must be a number from 1 to 65535");
}

TEST(Authority, PortBounds) {
  EXPECT_EQ(parse_authority("h:1")->port, 1);
  EXPECT_EQ(parse_authority("h:65535")->port, 65535);
  EXPECT_EQ(parse_authority("h:0080")->port, 80);
  for (const char* bad : {"h:", "h:0", "h:65536", "h:-1", "h:+1", "h: 1", "h:1 ", "h:12ab",
                          "h:http", "h:99999999999999999999", "[::1]:", "[::1]:0"}) {
    const auto a = parse_authority(bad);
    EXPECT_FALSE(a) << bad;
    if (!a) {
      EXPECT_EQ(a.error().code, Errc::invalid_argument) << bad;
      EXPECT_EQ(a.error().message, "the port must be a number from 1 to 65535") << bad;
    }
  }
}

TEST(Authority, EachMalformationHasItsOwnMessage) {
  struct Case {
    const char* authority;
    const char* message;
  };
  for (const auto& c : {Case{"", "the host is missing"}, Case{":6379", "the host is missing"},
                        Case{"[]", "the host is missing"}, Case{"[]:6379", "the host is missing"},
                        Case{"[::1", "IPv6 address is missing its closing ']'"},
                        Case{"[::1:6379", "IPv6 address is missing its closing ']'"},
                        Case{"[::1]x", "unexpected text after the IPv6 address"},
                        Case{"[::1]6379", "unexpected text after the IPv6 address"},
                        Case{"[::1]]:1", "unexpected text after the IPv6 address"}}) {
    const auto a = parse_authority(c.authority);
    ASSERT_FALSE(a) << c.authority;
    EXPECT_EQ(a.error().message, c.message) << c.authority;
  }
}

// format_host_port: the one way a host and port are shown.

TEST(FormatHostPort, NameOrIpv4AsIs) {
  EXPECT_EQ(format_host_port("imap.example.com", 993), "imap.example.com:993");
  EXPECT_EQ(format_host_port("127.0.0.1", 1993), "127.0.0.1:1993");
}

TEST(FormatHostPort, Ipv6InBrackets) {
  EXPECT_EQ(format_host_port("::1", 6379), "[::1]:6379");
  EXPECT_EQ(format_host_port("fe80::1%eth0", 1), "[fe80::1%eth0]:1");
}

TEST(FormatHostPort, RoundTripsThroughTheParsers) {
  for (const char* host : {"::1", "2001:db8::7", "mail.example.org", "10.0.0.1"}) {
    const auto text = format_host_port(host, 1143);
    const auto hp = parse_host_port(text);
    ASSERT_TRUE(hp) << text;
    EXPECT_EQ(hp->host, host);
    EXPECT_EQ(hp->port, 1143);
    const auto a = parse_authority(text);
    ASSERT_TRUE(a) << text;
    EXPECT_EQ(a->host, host);
    EXPECT_EQ(a->port, 1143);
  }
}

}  // namespace iop
