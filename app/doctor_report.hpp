#pragma once
// `doctor` (issue #6 §4), the pure part: what one check found, the decisions that need no I/O
// (file mode, certificate dates, an account's tokens and keepalive), and how the findings are
// printed (one line per check, or JSON) and turned into an exit code. app/doctor.cpp gathers
// the facts.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/credentials_store.hpp"

namespace iop::app {

enum class CheckStatus { ok, warn, fail };
std::string_view to_string(CheckStatus status);

struct Check {
  std::string name;  // what was checked: "database", "upstream outlook.office365.com:993"
  CheckStatus status = CheckStatus::ok;
  std::string detail;  // what was found (never a secret)
  std::string fix;     // for warn and fail: what to do; may be empty for warn
};

// One line per check, the status padded to a column, then the name padded to a column, then
// the detail; a fail's (or warn's) fix on the next line, indented. A last line counts them.
//   ok    database            /srv/iop/data/credentials.db opens, migrations current
//   fail  redis               redis://127.0.0.1:6379: connection refused
//         fix: start Redis, or remove [redis] url to run without the cache
std::string render_text(const std::vector<Check>& checks);

// {"ok": bool, "checks": [{"name", "status", "detail", "fix"?}], "counts": {"ok", "warn",
// "fail"}}: "fix" only when there is one.
nlohmann::json render_json(const std::vector<Check>& checks);

// 1 when any check failed, else 0 (warnings do not fail the run).
int doctor_exit_code(const std::vector<Check>& checks);

// The config file's mode: a file holding a secret (a client secret, a Redis password) must not
// be readable or writable by group or others. `mode` is st_mode.
Check config_mode_check(const std::filesystem::path& file, mode_t mode, bool holds_secret);

// The local server certificate's dates: fail when not yet valid or expired, warn when it
// expires within `warn_within`, ok otherwise; the detail says the days left and names the CA
// file clients must trust.
struct CertificateDates {
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
};
Check server_certificate_check(const std::filesystem::path& cert, const CertificateDates& dates,
                               const std::filesystem::path& ca_file,
                               std::chrono::system_clock::time_point now,
                               std::chrono::days warn_within = std::chrono::days(30));

// One account: status (needs_reauth fails, naming `account reauth`), access-token expiry, last
// refresh and when the keepalive refresh is due (last refresh + `keepalive`; overdue warns,
// since Microsoft revokes a refresh token unused for 90 days). Password accounts have none of
// the token facts, and app-only accounts (`app_only`: client credentials) no refresh token to
// keep alive. A keepalive is overdue an hour after it was due: `serve` refreshes due accounts
// every minute, so by then it is not running or its refreshes fail.
Check account_check(const storage::AccountSummary& account, bool app_only,
                    std::chrono::milliseconds keepalive, std::chrono::system_clock::time_point now);

}  // namespace iop::app
