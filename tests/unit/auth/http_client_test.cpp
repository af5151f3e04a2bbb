#include "auth/http_client.hpp"

#include <gtest/gtest.h>

namespace iop::auth {
namespace {

TEST(AcceptableEndpointUrl, HttpsAnywhere) {
  EXPECT_TRUE(
      acceptable_endpoint_url("https://login.microsoftonline.com/common/oauth2/v2.0/token"));
  EXPECT_TRUE(acceptable_endpoint_url("HTTPS://login.microsoftonline.com/x"));
  EXPECT_TRUE(acceptable_endpoint_url("https://10.0.0.1:8443/token"));
  EXPECT_FALSE(acceptable_endpoint_url("https://"));
  EXPECT_FALSE(acceptable_endpoint_url("https:///path"));
}

TEST(AcceptableEndpointUrl, PlainHttpOnlyToLoopback) {
  EXPECT_TRUE(acceptable_endpoint_url("http://127.0.0.1:8080/common/oauth2/v2.0/token"));
  EXPECT_TRUE(acceptable_endpoint_url("http://127.1.2.3/token"));
  EXPECT_TRUE(acceptable_endpoint_url("http://localhost:1/token"));
  EXPECT_TRUE(acceptable_endpoint_url("http://LocalHost/token"));
  EXPECT_TRUE(acceptable_endpoint_url("http://[::1]:8080/token"));
  EXPECT_TRUE(acceptable_endpoint_url("http://127.0.0.1"));
  EXPECT_FALSE(acceptable_endpoint_url("http://login.microsoftonline.com/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://128.0.0.1/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://127.0.0/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://127.0.0.256/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://127.0.0.1.evil.com/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://localhost.evil.com/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://localhost@evil.com/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://evil.com#@localhost/"));
  EXPECT_FALSE(acceptable_endpoint_url("http://[::2]/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://localhost:http/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://localhost:/token"));
  // The port rule is common/host_port's parse_authority: 1..65535, not just "five digits".
  EXPECT_FALSE(acceptable_endpoint_url("http://localhost:0/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://127.0.0.1:99999/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://[::1/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://[::1]x/token"));
  EXPECT_FALSE(acceptable_endpoint_url("http://[localhost]/token"));
}

TEST(AcceptableEndpointUrl, OtherSchemesAndJunk) {
  EXPECT_FALSE(acceptable_endpoint_url(""));
  EXPECT_FALSE(acceptable_endpoint_url("ftp://127.0.0.1/token"));
  EXPECT_FALSE(acceptable_endpoint_url("file:///etc/passwd"));
  EXPECT_FALSE(acceptable_endpoint_url("login.microsoftonline.com/token"));
  EXPECT_FALSE(acceptable_endpoint_url("https://login.microsoftonline.com/a b"));
  EXPECT_FALSE(acceptable_endpoint_url("https://login.microsoftonline.com/\r\nx"));
}

TEST(PostForm, RefusesUnacceptableUrlsWithoutConnecting) {
  const auto r = post_form("http://example.com/token", {{"a", Secret(std::string_view("b"))}}, {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
}

}  // namespace
}  // namespace iop::auth
