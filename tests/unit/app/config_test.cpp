#include "app/config.hpp"

#include <fmt/format.h>
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

TEST(Config, StorageOnPostgreSQL) {
  // SQLite: the log is in the database file.
  const auto sqlite = parse_config("", "/base").value();
  EXPECT_FALSE(sqlite.storage.postgres());
  EXPECT_EQ(sqlite.storage.connection_log, "/base/data/credentials.db");
  const auto moved = parse_config("[storage]\ndatabase = \"db/creds.db\"\n", "/base").value();
  EXPECT_EQ(moved.storage.connection_log, "/base/db/creds.db");

  // PostgreSQL: the URL as written (not joined to the base folder), a local log by default.
  const auto pg = parse_config(R"(
[storage]
database = "postgresql://mail@db.example.org/credentials?sslmode=verify-full"
password_file = "secrets/pgpassword"
)",
                               "/base")
                      .value();
  EXPECT_TRUE(pg.storage.postgres());
  EXPECT_EQ(pg.storage.database.native(),
            "postgresql://mail@db.example.org/credentials?sslmode=verify-full");
  EXPECT_EQ(pg.storage.password_file, "/base/secrets/pgpassword");
  // The log is in the database, one chain for every instance.
  EXPECT_EQ(pg.storage.connection_log, pg.storage.database);
  const auto own_log = parse_config(
      "[storage]\ndatabase = \"postgres://h/db\"\nconnection_log = \"/var/log/iop.db\"\n", "/base");
  ASSERT_TRUE(own_log.has_value()) << own_log.error().message;
  EXPECT_EQ(own_log->storage.connection_log, "/var/log/iop.db");

  EXPECT_EQ(parse_error("[storage]\npassword_file = \"pw\"\n"),
            "[storage] password_file: is for a PostgreSQL database (postgresql://...) only");
  // A URL stays a URL: the database's own, or refused.
  const auto same = parse_config(
      "[storage]\ndatabase = \"postgres://h/db\"\nconnection_log = "
      "\"postgres://h/db\"\n",
      "/base");
  ASSERT_TRUE(same.has_value()) << same.error().message;
  EXPECT_EQ(same->storage.connection_log.native(), "postgres://h/db");
  EXPECT_NE(parse_error("[storage]\ndatabase = \"postgres://h/db\"\nconnection_log = "
                        "\"postgres://h/other\"\n")
                .find("not another PostgreSQL database"),
            std::string::npos);
  EXPECT_NE(parse_error("[storage]\nconnection_log = \"log.db\"\n").find("PostgreSQL"),
            std::string::npos);
}

TEST(Config, PrewarmKeys) {
  const auto defaults = parse_config("", "/base").value();
  EXPECT_FALSE(defaults.upstream.prewarm) << "opt-in";
  EXPECT_EQ(defaults.upstream.prewarm_window, 30min);
  EXPECT_EQ(defaults.upstream.max_connections_per_account, 0) << "no limit";
  const auto c = parse_config(R"(
[upstream]
prewarm = true
prewarm_window = "10m"
max_connections_per_account = 15
)",
                              "/base")
                     .value();
  EXPECT_TRUE(c.upstream.prewarm);
  EXPECT_EQ(c.upstream.prewarm_window, 10min);
  EXPECT_EQ(c.upstream.max_connections_per_account, 15);
  EXPECT_EQ(parse_error("[upstream]\nprewarm_window = \"0s\"\n"),
            "[upstream] prewarm_window: must be at least 1s");
  EXPECT_EQ(parse_error("[upstream]\nprewarm = \"yes\"\n"),
            "[upstream] prewarm: expected true or false, got \"yes\"");
  EXPECT_NE(parse_error("[upstream]\nmax_connections_per_account = -1\n")
                .find("[upstream] max_connections_per_account: expected an integer from 0"),
            std::string::npos);
}

TEST(Config, ProbeIsAutoTrueOrFalse) {
  EXPECT_EQ(parse_config("", "/base").value().upstream.probe, proxy::Probe::exchange)
      << "the default: against Exchange only";
  const auto probe_of = [](std::string_view value) {
    return parse_config(fmt::format("[upstream]\nprobe = {}\n", value), "/base")
        .value()
        .upstream.probe;
  };
  EXPECT_EQ(probe_of("true"), proxy::Probe::always);
  EXPECT_EQ(probe_of("false"), proxy::Probe::never);
  EXPECT_EQ(probe_of("\"auto\""), proxy::Probe::exchange);
  EXPECT_EQ(parse_error("[upstream]\nprobe = \"yes\"\n"),
            "[upstream] probe: expected true, false or \"auto\", got \"yes\"");
  EXPECT_EQ(parse_error("[upstream]\nprobe = 1\n"),
            "[upstream] probe: expected true, false or \"auto\", got 1");
}

TEST(Config, SubmissionKeys) {
  const auto c = parse_config(
                     "[server]\nlisten_submission = \"127.0.0.1:1587\"\n"
                     "listen_submissions = \"127.0.0.1:1465\"\nhostname = \"mail.local\"\n"
                     "[upstream]\nsmtp_host = \"smtp.example.org\"\nsmtp_port = 465\n"
                     "[oauth]\nsend_scope = \"\"\n"
                     "[providers.own]\nsmtp_host = \"s.example\"\nsmtp_port = 2525\n"
                     "smtp_tls = \"implicit\"\n",
                     "/etc/iop")
                     .value();
  ASSERT_TRUE(c.server.listen_submission);
  EXPECT_EQ(c.server.listen_submission->port, 1587);
  EXPECT_EQ(c.server.listen_submissions->port, 1465);
  EXPECT_EQ(c.server.hostname, "mail.local");
  EXPECT_EQ(c.upstream.smtp_host, "smtp.example.org");
  EXPECT_EQ(c.upstream.smtp_tls, "");  // by port: 465 is implicit (app/serve.cpp)
  EXPECT_EQ(c.provider("default").value()->smtp_host, "smtp.example.org");
  EXPECT_EQ(c.provider("default").value()->send_scope, "");
  EXPECT_EQ(c.provider("own").value()->smtp_port, 2525);
  EXPECT_EQ(c.provider("own").value()->smtp_tls, "implicit");
  // Off unless set; the Microsoft default otherwise.
  const auto d = parse_config("", "/etc/iop").value();
  EXPECT_FALSE(d.server.listen_submission);
  EXPECT_EQ(d.upstream.smtp_host, "smtp.office365.com");
  EXPECT_EQ(d.provider("default").value()->send_scope, "https://outlook.office.com/SMTP.Send");

  EXPECT_EQ(parse_error("[upstream]\nsmtp_tls = \"ssl\"\n"),
            "[upstream] smtp_tls: expected \"starttls\" or \"implicit\", got \"ssl\"");
  EXPECT_EQ(parse_error("[providers.x]\nsmtp_tls = \"tls\"\n"),
            "[providers.x] smtp_tls: expected \"starttls\" or \"implicit\", got \"tls\"");
  EXPECT_NE(parse_error("[server]\nhostname = \"two words\"\n").find("[server] hostname"),
            std::string::npos);
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
  EXPECT_NE(parse_error("[oauth]\nkeepalive = \"0s\"\n").find("at least 1h"), std::string::npos);
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

TEST(Config, ProvidersAreTheDefaultTheBuiltInsAndTheConfiguredOnes) {
  const auto c = parse_config(R"(
[upstream]
host = "imap.example.com"
port = 10993
[oauth]
client_id = "default-client"
[providers.microsoft]
client_id = "ms-client"
tenant = "contoso.com"
[providers.work]
flow = "app"
tenant = "fabrikam.com"
token_endpoint = "http://127.0.0.1:9/{tenant}/oauth2/v2.0/token"
authorize_endpoint = ""
scope = "https://outlook.office365.com/.default"
upstream_host = "imap.fabrikam.com"
upstream_port = 1993
client_secret = "s3cret"
)",
                              "/x")
                     .value();
  const auto* fallback = c.provider("default").value();
  EXPECT_EQ(fallback->client_id, "default-client");
  EXPECT_EQ(fallback->upstream_host, "imap.example.com");
  EXPECT_EQ(fallback->upstream_port, 10993);
  EXPECT_EQ(fallback->flow, auth::Flow::delegated);

  // A built-in profile keeps the keys its section does not set.
  const auto* ms = c.provider("microsoft").value();
  EXPECT_EQ(ms->client_id, "ms-client");
  EXPECT_EQ(ms->tenant, "contoso.com");
  EXPECT_EQ(ms->upstream_host, "outlook.office365.com");
  EXPECT_NE(ms->token_endpoint.find("{tenant}"), std::string::npos);
  EXPECT_EQ(c.provider("google").value()->upstream_host, "imap.gmail.com");

  // A new name starts from the default profile.
  const auto* work = c.provider("work").value();
  EXPECT_EQ(work->flow, auth::Flow::app);
  EXPECT_EQ(work->client_id, "default-client");
  EXPECT_EQ(work->client_secret.reveal(), "s3cret");
  EXPECT_TRUE(work->authorize_endpoint.empty());
  EXPECT_EQ(work->upstream_port, 1993);
  const auto resolved = auth::resolve_provider(*work, "", "").value();
  EXPECT_EQ(resolved.token_endpoint, "http://127.0.0.1:9/fabrikam.com/oauth2/v2.0/token");

  const auto unknown = c.provider("nope");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("known: default, google, microsoft, microsoft-app, work"),
            std::string::npos)
      << unknown.error().message;
}

TEST(Config, ProviderErrorsNameTheSectionAndKey) {
  EXPECT_NE(parse_error("[providers.x]\nflow = \"user\"\n").find("[providers.x] flow"),
            std::string::npos);
  EXPECT_NE(parse_error("[providers.x]\nbogus = 1\n").find("[providers.x] bogus: unknown key"),
            std::string::npos);
  EXPECT_NE(parse_error("[providers.x]\ntenant = \"a/b\"\n").find("[providers.x] tenant"),
            std::string::npos);
  EXPECT_NE(parse_error("[providers.x]\ntoken_endpoint = \"http://example.com/t\"\n")
                .find("[providers.x] token_endpoint"),
            std::string::npos);
  EXPECT_NE(parse_error("[providers.x]\nscope = \"IMAP.AccessAsUser.All\"\n")
                .find("[providers.x] scope: must include offline_access"),
            std::string::npos);
  EXPECT_NE(parse_error("[providers.default]\nclient_id = \"a\"\n").find("[oauth]"),
            std::string::npos);
  EXPECT_NE(parse_error("[providers.x]\nupstream_port = 0\n").find("[providers.x] upstream_port"),
            std::string::npos);
  // Google's scope has no offline_access: its profile asks with access_type=offline instead.
  EXPECT_TRUE(parse_config("[providers.google]\nclient_id = \"g\"\n", "/").has_value());
}

}  // namespace
}  // namespace iop::app
