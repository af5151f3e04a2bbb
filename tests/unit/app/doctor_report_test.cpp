#include "app/doctor_report.hpp"

#include <gtest/gtest.h>

namespace iop::app {
namespace {

using namespace std::chrono_literals;
using std::chrono::system_clock;

// 2026-01-01 00:00:00Z
const system_clock::time_point now = system_clock::time_point(1767225600s);

std::int64_t at(system_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::seconds>((now + d).time_since_epoch()).count();
}

TEST(DoctorReport, TextHasOneLinePerCheckAndTheFixUnderAFail) {
  const std::vector<Check> checks{
      {"database", CheckStatus::ok, "/srv/iop/data/credentials.db opens", ""},
      {"redis", CheckStatus::fail, "connection refused", "start Redis"},
      {"upstream imap.example.com:993", CheckStatus::warn, "no AUTH=XOAUTH2", ""},
  };
  const auto text = render_text(checks);
  EXPECT_EQ(text,
            "ok    database                       /srv/iop/data/credentials.db opens\n"
            "fail  redis                          connection refused\n"
            "      fix: start Redis\n"
            "warn  upstream imap.example.com:993  no AUTH=XOAUTH2\n"
            "1 ok, 1 warn, 1 fail\n");
}

TEST(DoctorReport, JsonCarriesTheSameStatusesAndFixesOnlyWhenThereAreSome) {
  const std::vector<Check> checks{{"database", CheckStatus::ok, "fine", ""},
                                  {"redis", CheckStatus::fail, "down", "start Redis"}};
  const auto j = render_json(checks);
  EXPECT_FALSE(j["ok"].get<bool>());
  ASSERT_EQ(j["checks"].size(), 2u);
  EXPECT_EQ(j["checks"][0]["status"], "ok");
  EXPECT_FALSE(j["checks"][0].contains("fix"));
  EXPECT_EQ(j["checks"][1]["name"], "redis");
  EXPECT_EQ(j["checks"][1]["status"], "fail");
  EXPECT_EQ(j["checks"][1]["fix"], "start Redis");
  EXPECT_EQ(j["counts"]["fail"], 1);
}

TEST(DoctorReport, OnlyAFailMakesTheExitCodeNonZero) {
  EXPECT_EQ(doctor_exit_code({}), 0);
  EXPECT_EQ(doctor_exit_code({{"a", CheckStatus::ok, "", ""}, {"b", CheckStatus::warn, "", ""}}),
            0);
  EXPECT_EQ(doctor_exit_code({{"a", CheckStatus::ok, "", ""}, {"b", CheckStatus::fail, "", ""}}),
            1);
}

TEST(DoctorReport, AConfigWithASecretMustBePrivate) {
  EXPECT_EQ(config_mode_check("/etc/iop.toml", 0100644, false).status, CheckStatus::ok);
  EXPECT_EQ(config_mode_check("/etc/iop.toml", 0100600, true).status, CheckStatus::ok);
  EXPECT_EQ(config_mode_check("/etc/iop.toml", 0100640, true).status, CheckStatus::fail);
  EXPECT_EQ(config_mode_check("/etc/iop.toml", 0100602, true).status, CheckStatus::fail)
      << "world-writable is as bad as world-readable";
  const auto c = config_mode_check("/etc/iop.toml", 0100644, true);
  EXPECT_EQ(c.name, "config permissions");
  EXPECT_EQ(c.fix, "chmod 600 /etc/iop.toml");
  EXPECT_NE(c.detail.find("0644"), std::string::npos) << c.detail;
}

TEST(DoctorReport, ServerCertificateDates) {
  const auto check = [](system_clock::duration from, system_clock::duration to) {
    return server_certificate_check("/d/server.crt", {now + from, now + to}, "/d/ca.crt", now);
  };
  const auto fine = check(-24h, 24h * 400);
  EXPECT_EQ(fine.status, CheckStatus::ok);
  EXPECT_NE(fine.detail.find("in 400 days"), std::string::npos) << fine.detail;
  EXPECT_NE(fine.detail.find("clients must trust /d/ca.crt"), std::string::npos) << fine.detail;
  EXPECT_EQ(check(-24h, 24h * 10).status, CheckStatus::warn);
  const auto expired = check(-24h * 400, -1s);
  EXPECT_EQ(expired.status, CheckStatus::fail);
  EXPECT_NE(expired.detail.find("expired"), std::string::npos) << expired.detail;
  EXPECT_FALSE(expired.fix.empty());
  EXPECT_EQ(check(1h, 24h * 400).status, CheckStatus::fail) << "not yet valid";
}

storage::AccountSummary oauth_account() {
  storage::AccountSummary a;
  a.email = "alice@example.com";
  a.use_oauth = true;
  a.provider = "default";
  a.token_expiry = at(50min);
  a.refreshed_at_ms = at(-10min) * 1000;
  return a;
}

TEST(DoctorReport, AHealthyAccountShowsExpiryRefreshAndKeepalive) {
  const auto c = account_check(oauth_account(), false, 24h * 7, now);
  EXPECT_EQ(c.status, CheckStatus::ok);
  EXPECT_EQ(c.name, "account alice@example.com");
  EXPECT_NE(c.detail.find("active"), std::string::npos) << c.detail;
  EXPECT_NE(c.detail.find("access token expires 2026-01-01 00:50:00Z (in 50m)"), std::string::npos)
      << c.detail;
  EXPECT_NE(c.detail.find("last refresh 2025-12-31 23:50:00Z (10m ago)"), std::string::npos)
      << c.detail;
  EXPECT_NE(c.detail.find("keepalive due 2026-01-07 23:50:00Z"), std::string::npos) << c.detail;
  auto just = oauth_account();
  just.refreshed_at_ms = at(-10s) * 1000;
  EXPECT_NE(account_check(just, false, 24h * 7, now).detail.find("(under a minute ago)"),
            std::string::npos);
}

TEST(DoctorReport, NeedsReauthFailsNamingTheCommand) {
  auto a = oauth_account();
  a.status = storage::AccountStatus::needs_reauth;
  a.status_reason = "AADSTS700082";
  const auto c = account_check(a, false, 24h * 7, now);
  EXPECT_EQ(c.status, CheckStatus::fail);
  EXPECT_EQ(c.fix, "imap-oauth2-proxy account reauth alice@example.com");
  EXPECT_NE(c.detail.find("AADSTS700082"), std::string::npos);
}

TEST(DoctorReport, AnOverdueKeepaliveWarns) {
  auto a = oauth_account();
  a.refreshed_at_ms = at(-24h * 8) * 1000;
  const auto c = account_check(a, false, 24h * 7, now);
  EXPECT_EQ(c.status, CheckStatus::warn);
  EXPECT_NE(c.fix.find("90 days"), std::string::npos);
  a.refreshed_at_ms = at(-24h * 7 + 1min) * 1000;
  EXPECT_EQ(account_check(a, false, 24h * 7, now).status, CheckStatus::ok) << "not yet due";
  a.refreshed_at_ms = at(-24h * 8) * 1000;
  EXPECT_EQ(account_check(a, true, 24h * 7, now).status, CheckStatus::ok)
      << "app-only accounts have no refresh token to keep alive";
}

TEST(DoctorReport, PasswordAccountsHaveNoTokenFacts) {
  storage::AccountSummary a;
  a.email = "bob@example.com";
  a.use_oauth = false;
  const auto c = account_check(a, false, 24h * 7, now);
  EXPECT_EQ(c.status, CheckStatus::ok);
  EXPECT_EQ(c.detail.find("token"), std::string::npos) << c.detail;
}

}  // namespace
}  // namespace iop::app
