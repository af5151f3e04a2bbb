#include "app/config.hpp"

#include <gtest/gtest.h>

namespace iop::app {
namespace {

using namespace std::chrono_literals;

std::string parse_error(std::string_view text) {
  auto r = parse_config(text, "/etc/iop");
  EXPECT_FALSE(r.has_value()) << text;
  return r ? std::string{} : r.error().message;
}

TEST(Config, DefaultsResolveAgainstTheBaseDir) {
  const auto c = parse_config("", "/srv/iop").value();
  EXPECT_EQ(c.storage.database, "/srv/iop/data/credentials.db");
  EXPECT_EQ(c.storage.key_file, "/srv/iop/data/master.key");
  EXPECT_EQ(c.server.listen_tls->port, 1993);
  EXPECT_FALSE(c.server.listen_starttls.has_value());
  EXPECT_EQ(c.upstream.host, "outlook.office365.com");
  EXPECT_EQ(c.oauth.refresh_margin, 5min);
  EXPECT_EQ(c.oauth.session_min_lifetime, 45min);
  EXPECT_EQ(c.oauth.keepalive, std::chrono::hours(24 * 7));
  EXPECT_TRUE(c.redis.url.empty());
  EXPECT_EQ(c.redis.timeout, 250ms);
}

TEST(Config, TheFileInitWritesParses) {
  const auto c = parse_config(default_config_text(), "/x").value();
  EXPECT_EQ(c.server.certificate, "/x/certs/server.crt");
  EXPECT_EQ(c.log.format, LogFormat::text);
}

TEST(Config, ReadsEveryValue) {
  const auto c = parse_config(R"(
[server]
listen_tls = "[::1]:2993"
listen_starttls = "127.0.0.1:1143"
max_connections = 50
[upstream]
host = "imap.example.com"
port = 10993
ca_file = "/abs/ca.pem"
[oauth]
token_endpoint = "http://127.0.0.1:8080/common/oauth2/v2.0/token"
client_id = "abc"
client_secret = "s3cret"
refresh_margin = "90s"
session_min_lifetime = "50m"
[storage]
database = "db/creds.db"
[redis]
url = "redis://127.0.0.1:6379/2"
timeout = "100ms"
[log]
level = "debug"
format = "json"
)",
                              "/base")
                     .value();
  EXPECT_EQ(c.server.listen_tls->host, "::1");
  EXPECT_EQ(c.server.listen_tls->port, 2993);
  EXPECT_EQ(c.server.listen_starttls->port, 1143);
  EXPECT_EQ(c.server.max_connections, 50);
  EXPECT_EQ(c.upstream.port, 10993);
  EXPECT_EQ(c.upstream.ca_file, "/abs/ca.pem");
  EXPECT_EQ(c.oauth.client_secret.reveal(), "s3cret");
  EXPECT_EQ(c.oauth.refresh_margin, 90s);
  EXPECT_EQ(c.oauth.session_min_lifetime, 50min);
  EXPECT_EQ(c.storage.database, "/base/db/creds.db");
  EXPECT_EQ(c.redis.url, "redis://127.0.0.1:6379/2");
  EXPECT_EQ(c.redis.timeout, 100ms);
  EXPECT_EQ(c.log.format, LogFormat::json);
}

TEST(Config, ErrorsNameTheKeyAndWhy) {
  EXPECT_EQ(parse_error("[redis]\ntimeout = \"fast\"\n"),
            "[redis] timeout: expected a duration like \"250ms\", got \"fast\"");
  EXPECT_EQ(parse_error("[redis]\ntimeout = 250\n"),
            "[redis] timeout: expected a duration like \"250ms\", got 250");
  EXPECT_EQ(parse_error("[oauth]\nrefresh_margn = \"5m\"\n"), "[oauth] refresh_margn: unknown key");
  EXPECT_EQ(parse_error("[proxy]\nx = 1\n"), "[proxy]: unknown section");
  EXPECT_NE(parse_error("[upstream]\nport = 70000\n").find("[upstream] port: expected an integer"),
            std::string::npos);
  EXPECT_NE(parse_error("[server]\nlisten_tls = \"localhost\"\n").find("[server] listen_tls"),
            std::string::npos);
  EXPECT_NE(parse_error("[log]\nformat = \"xml\"\n").find("[log] format"), std::string::npos);
  EXPECT_NE(parse_error("[log]\nlevel = \"loud\"\n").find("[log] level"), std::string::npos);
  EXPECT_NE(parse_error("[oauth]\nkeepalive = \"100d\"\n").find("90 days"), std::string::npos);
  EXPECT_NE(parse_error("[oauth]\nscope = \"IMAP.AccessAsUser.All\"\n").find("offline_access"),
            std::string::npos);
  EXPECT_NE(parse_error("[server\n").find("config:"), std::string::npos) << "TOML syntax error";
}

TEST(Config, EndpointsMustBeHttpsExceptLoopback) {
  EXPECT_TRUE(
      parse_config("[oauth]\ntoken_endpoint = \"http://localhost:1/t\"\n", "/").has_value());
  EXPECT_TRUE(
      parse_config("[oauth]\ntoken_endpoint = \"http://127.0.0.1:1/t\"\n", "/").has_value());
  EXPECT_TRUE(parse_config("[oauth]\ntoken_endpoint = \"http://[::1]:1/t\"\n", "/").has_value());
  EXPECT_NE(parse_error("[oauth]\ntoken_endpoint = \"http://login.example.com/t\"\n")
                .find("[oauth] token_endpoint: expected an https:// URL"),
            std::string::npos);
  EXPECT_NE(parse_error("[oauth]\ntoken_endpoint = \"http://127.0.0.1.evil.com/t\"\n").size(), 0u);
}

TEST(Config, SecretsDoNotAppearInErrors) {
  const auto message = parse_error("[oauth]\nclient_secret = \"s3cret\"\nbogus = 1\n");
  EXPECT_EQ(message.find("s3cret"), std::string::npos);
}

}  // namespace
}  // namespace iop::app
