#pragma once
// `imap-oauth2-proxy audit`: shows and verifies the connection log (storage/audit_log.hpp).
//
//   audit [--since T] [--until T] [--account E] [--outcome O] [--client ADDR] [--event NAME]
//         [--format table|json|csv] [--limit N] [--follow] [--config FILE]
//   audit --summary [--since T] [--format table|json]
//   audit --verify [--expect-head N:HASH]
//   audit --prune                      (deletes rows older than [audit] keep_days)
//
// T is a UTC date or date-time (`2026-11-27`, `2026-11-27T10:00:00Z`) or a duration back from
// now (`24h`, `7d`). Reading needs only the database (the log holds no secrets); --verify and
// --prune need the master key too, since the chain is keyed with it.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace CLI {
class App;
}

namespace iop::app {

// What the `audit` subcommand parsed.
struct AuditOptions {
  std::optional<std::string> since;
  std::optional<std::string> until;
  std::optional<std::string> account;
  std::string format = "table";
  std::optional<std::string> outcome;
  std::optional<std::string> client;
  std::optional<std::string> event;
  std::int64_t limit = 0;  // 0: every matching row
  bool verify = false;
  std::optional<std::string> expect_head;  // with --verify: "N:HASH"
  bool summary = false;
  bool follow = false;
  bool prune = false;
  std::optional<std::filesystem::path> config;
};

// Adds the `audit` subcommand to `app`; parsing fills `options`, which must outlive `app`'s
// parse. Returns the subcommand, so the caller can test `parsed()`.
CLI::App* add_audit_command(CLI::App& app, AuditOptions& options);

// Runs `audit` with parsed `options`. Returns the exit code: 0 on success (and for --verify,
// an intact log), 1 with a one-line reason on stderr otherwise (for --verify, a broken log:
// "audit log BROKEN at row N: <why>").
int run_audit(const AuditOptions& options);

// Parses a --since/--until value: an ISO-8601 UTC date (`2026-11-27`, midnight) or date-time
// (`2026-11-27T10:00:00Z`, `2026-11-27T10:00Z`; the `Z` may be left out, a space may replace
// the `T`), or a duration (iop::parse_duration: `90m`, `24h`, `7d`) meaning that long before
// `now_ms`. Returns unix milliseconds, nullopt when `text` is neither.
std::optional<std::int64_t> parse_audit_time(std::string_view text, std::int64_t now_ms);

}  // namespace iop::app
