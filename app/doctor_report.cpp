#include "app/doctor_report.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>

#include "app/cli_support.hpp"

namespace iop::app {

namespace {

using std::chrono::system_clock;

constexpr std::size_t min_name_width = 18;
constexpr std::size_t max_name_width = 40;

std::int64_t unix_seconds(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// Whole days from `now` to `t`, rounded toward zero ("expires in 0 days" on its last day).
std::int64_t days_until(system_clock::time_point t, system_clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::days>(t - now).count();
}

// "in 3h 20m", "5m ago": a short human form of a signed distance in seconds.
std::string relative(std::int64_t seconds) {
  const bool past = seconds < 0;
  std::int64_t s = past ? -seconds : seconds;
  if (s < 60) {
    return past ? "under a minute ago" : "in under a minute";
  }
  std::string text;
  if (s >= 2 * 86400) {
    text = fmt::format("{}d", s / 86400);
  } else if (s >= 3600) {
    text = fmt::format("{}h {}m", s / 3600, (s % 3600) / 60);
  } else {
    text = fmt::format("{}m", s / 60);
  }
  return past ? text + " ago" : "in " + text;
}

}  // namespace

std::string_view to_string(CheckStatus status) {
  switch (status) {
    case CheckStatus::ok:
      return "ok";
    case CheckStatus::warn:
      return "warn";
    case CheckStatus::fail:
      return "fail";
  }
  return "fail";
}

std::string render_text(const std::vector<Check>& checks) {
  std::size_t width = min_name_width;
  for (const auto& c : checks) {
    width = std::max(width, std::min(c.name.size() + 2, max_name_width));
  }
  std::string out;
  int counts[3] = {0, 0, 0};
  for (const auto& c : checks) {
    ++counts[static_cast<int>(c.status)];
    // A name longer than the column still gets one space before its detail.
    const std::size_t pad = c.name.size() < width ? width - c.name.size() : 1;
    out +=
        fmt::format("{:<6}{}{}{}\n", to_string(c.status), c.name, std::string(pad, ' '), c.detail);
    if (c.status != CheckStatus::ok && !c.fix.empty()) {
      out += fmt::format("{:<6}fix: {}\n", "", c.fix);
    }
  }
  out += fmt::format("{} ok, {} warn, {} fail\n", counts[0], counts[1], counts[2]);
  return out;
}

nlohmann::json render_json(const std::vector<Check>& checks) {
  nlohmann::json list = nlohmann::json::array();
  int counts[3] = {0, 0, 0};
  for (const auto& c : checks) {
    ++counts[static_cast<int>(c.status)];
    nlohmann::json item{{"name", c.name}, {"status", to_string(c.status)}, {"detail", c.detail}};
    if (!c.fix.empty()) {
      item["fix"] = c.fix;
    }
    list.push_back(std::move(item));
  }
  return {{"ok", counts[2] == 0},
          {"checks", std::move(list)},
          {"counts", {{"ok", counts[0]}, {"warn", counts[1]}, {"fail", counts[2]}}}};
}

int doctor_exit_code(const std::vector<Check>& checks) {
  return std::any_of(checks.begin(), checks.end(),
                     [](const Check& c) { return c.status == CheckStatus::fail; })
             ? 1
             : 0;
}

Check config_mode_check(const std::filesystem::path& file, mode_t mode, bool holds_secret) {
  Check c{"config permissions", CheckStatus::ok, {}, {}};
  const auto perms = mode & 0777;
  const bool open_to_others = (perms & (S_IRWXG | S_IRWXO)) != 0;
  if (!holds_secret) {
    c.detail = fmt::format("{} (mode {:04o}) holds no secret", file.string(), perms);
    return c;
  }
  if (!open_to_others) {
    c.detail = fmt::format("{} (mode {:04o}) holds a secret and only its owner can read it",
                           file.string(), perms);
    return c;
  }
  c.status = CheckStatus::fail;
  c.detail = fmt::format(
      "{} (mode {:04o}) holds a secret (a client secret or Redis password) and other users "
      "can read it",
      file.string(), perms);
  c.fix = fmt::format("chmod 600 {}", file.string());
  return c;
}

Check server_certificate_check(const std::filesystem::path& cert, const CertificateDates& dates,
                               const std::filesystem::path& ca_file, system_clock::time_point now,
                               std::chrono::days warn_within) {
  Check c{"server certificate", CheckStatus::ok, {}, {}};
  const std::string trust = fmt::format("clients must trust {}", ca_file.string());
  // Renewal is what `serve` does at startup for a certificate our CA issued; removing the pair
  // makes `serve` (or `init`) issue a new one from the same CA, so trust is kept.
  const std::string renew = fmt::format(
      "restart `imap-oauth2-proxy serve` (it renews a certificate its CA issued), "
      "or replace {}",
      cert.string());
  if (now < dates.not_before) {
    c.status = CheckStatus::fail;
    c.detail = fmt::format("{} is not valid before {} (check the clock); {}", cert.string(),
                           format_time(unix_seconds(dates.not_before)), trust);
    c.fix = renew;
    return c;
  }
  const auto days = days_until(dates.not_after, now);
  if (now >= dates.not_after) {
    c.status = CheckStatus::fail;
    c.detail = fmt::format("{} expired on {}; {}", cert.string(),
                           format_time(unix_seconds(dates.not_after)), trust);
    c.fix = renew;
    return c;
  }
  c.detail = fmt::format("{} valid, expires {} (in {} days); {}", cert.string(),
                         format_time(unix_seconds(dates.not_after)), days, trust);
  if (dates.not_after - now < warn_within) {
    c.status = CheckStatus::warn;
    c.fix = renew;
  }
  return c;
}

Check account_check(const storage::AccountSummary& account, bool app_only,
                    std::chrono::milliseconds keepalive, system_clock::time_point now) {
  Check c{"account " + account.email, CheckStatus::ok, {}, {}};
  if (!account.verified) {
    // The row MAC failed: someone changed it without the master key (issue #7 item 4).
    c.status = CheckStatus::fail;
    c.detail = "the stored row does not verify under the master key (changed outside "
               "imap-oauth2-proxy)";
    c.fix = fmt::format("imap-oauth2-proxy account remove {} and add it again", account.email);
    return c;
  }
  const auto now_s = unix_seconds(now);
  if (!account.use_oauth) {
    c.detail = fmt::format("{}, upstream password", storage::to_string(account.status));
    return c;
  }
  std::vector<std::string> parts{std::string(storage::to_string(account.status))};
  if (account.status == storage::AccountStatus::needs_reauth) {
    c.status = CheckStatus::fail;
    if (!account.status_reason.empty()) {
      parts.back() += " (" + account.status_reason + ")";
    }
    c.fix = fmt::format("imap-oauth2-proxy account reauth {}", account.email);
  }
  if (account.token_expiry > 0) {
    parts.push_back(
        fmt::format("access token {} {} ({})", account.token_expiry > now_s ? "expires" : "expired",
                    format_time(account.token_expiry), relative(account.token_expiry - now_s)));
  } else {
    parts.push_back("no access token yet");
  }
  const auto refreshed_s = account.refreshed_at_ms / 1000;
  parts.push_back(account.refreshed_at_ms > 0
                      ? fmt::format("last refresh {} ({})", format_time(refreshed_s),
                                    relative(refreshed_s - now_s))
                      : "never refreshed");
  if (app_only) {
    parts.push_back("app-only: no refresh token to keep alive");
  } else if (account.status == storage::AccountStatus::active) {
    const auto due_s =
        refreshed_s + std::chrono::duration_cast<std::chrono::seconds>(keepalive).count();
    parts.push_back(
        fmt::format("keepalive due {} ({})", format_time(due_s), relative(due_s - now_s)));
    constexpr std::int64_t overdue_after_s = 3600;
    if (now_s - due_s > overdue_after_s) {
      c.status = CheckStatus::warn;
      c.fix = fmt::format(
          "keep `imap-oauth2-proxy serve` running (it refreshes due accounts), or run "
          "`imap-oauth2-proxy token {}`: Microsoft revokes refresh tokens unused for 90 days",
          account.email);
    }
  }
  c.detail = fmt::format("{}", fmt::join(parts, ", "));
  return c;
}

}  // namespace iop::app
