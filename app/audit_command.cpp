#include "app/audit_command.hpp"

#include "app/cli_support.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "app/config.hpp"
#include "common/database_url.hpp"
#include "common/duration.hpp"
#include "common/email.hpp"
#include "common/host_port.hpp"
#include "common/sanitize.hpp"
#include "storage/audit_log.hpp"

namespace iop::app {
namespace fs = std::filesystem;

namespace {

// Reads `count` decimal digits at `pos`; nullopt unless all are digits.
std::optional<int> digits_at(std::string_view text, std::size_t pos, std::size_t count) {
  if (pos + count > text.size()) {
    return std::nullopt;
  }
  int value = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    if (text[i] < '0' || text[i] > '9') {
      return std::nullopt;
    }
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

// "2026-11-27 10:00:00.123Z": milliseconds show because rows of one second often differ only
// in them.
std::string iso_time(std::int64_t unix_ms, bool with_t) {
  const auto seconds = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
  const auto millis = unix_ms - seconds * 1000;
  const auto t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, with_t ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, millis);
}

std::string format_span(std::int64_t ms) {
  if (ms < 0) {
    return "-";
  }
  if (ms < 1000) {
    return fmt::format("{}ms", ms);
  }
  if (ms < 60'000) {
    return fmt::format("{}.{}s", ms / 1000, (ms % 1000) / 100);
  }
  const auto s = ms / 1000;
  if (s < 3600) {
    return fmt::format("{}m{:02}s", s / 60, s % 60);
  }
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

std::string client_of(const storage::ConnectionRecord& r) {
  if (r.client_address.empty()) {
    return "-";
  }
  return format_host_port(r.client_address, r.client_port);
}

// For the terminal: rows are sanitized when written, but a row from an older version may still
// hold what a client sent, so the same rule applies again here (it changes nothing on a
// sanitized value) and control bytes show as \xNN rather than being interpreted. Empty
// shows as "-".
std::string printable(std::string_view text) {
  if (text.empty()) {
    return "-";
  }
  return sanitize_for_log(text, std::string_view::npos);
}

// A header and rows in left-aligned columns two spaces apart; the last column is not padded.
template <std::size_t columns>
void print_aligned(const std::array<std::string, columns>& header,
                   const std::vector<std::array<std::string, columns>>& cells) {
  std::array<std::size_t, columns> width{};
  for (std::size_t c = 0; c < columns; ++c) {
    width[c] = header[c].size();
    for (const auto& row : cells) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto print_row = [&width](const std::array<std::string, columns>& row) {
    std::string line;
    for (std::size_t c = 0; c < columns; ++c) {
      line += c + 1 == columns ? row[c] : fmt::format("{:<{}}  ", row[c], width[c]);
    }
    std::cout << line << "\n";
  };
  print_row(header);
  for (const auto& row : cells) {
    print_row(row);
  }
}

void print_table(const std::vector<storage::ConnectionRecord>& rows) {
  constexpr std::size_t columns = 14;
  const std::array<std::string, columns> header = {"ID",       "STARTED (UTC)",
                                                   "DURATION", "CLIENT",
                                                   "LISTENER", "USERNAME",
                                                   "ACCOUNT",  "EVENT",
                                                   "OUTCOME",  "TOKEN",
                                                   "C->U",     "U->C",
                                                   "MSGS",     "CLOSE REASON / DETAIL"};
  std::vector<std::array<std::string, columns>> cells;
  cells.reserve(rows.size());
  for (const auto& r : rows) {
    cells.push_back(
        {std::to_string(r.id), iso_time(r.started_at_ms, false),
         format_span(r.ended_at_ms - r.started_at_ms), client_of(r), printable(r.listener),
         printable(r.username), printable(r.account),
         r.event.empty() ? std::string("connection") : printable(r.event),
         std::string(storage::to_string(r.outcome)), printable(storage::to_string(r.token_source)),
         std::to_string(r.bytes_client_to_upstream), std::to_string(r.bytes_upstream_to_client),
         std::to_string(r.messages), printable(r.close_reason)});
  }
  print_aligned(header, cells);
}

// Keys in column order (ordered_json), as in the CSV header.
nlohmann::ordered_json to_json(const storage::ConnectionRecord& r) {
  return {{"id", r.id},
          {"started_at", iso_time(r.started_at_ms, true)},
          {"ended_at", iso_time(r.ended_at_ms, true)},
          {"started_at_ms", r.started_at_ms},
          {"ended_at_ms", r.ended_at_ms},
          {"client_address", r.client_address},
          {"client_port", r.client_port},
          {"listener", r.listener},
          {"username", r.username},
          {"account", r.account},
          {"outcome", storage::to_string(r.outcome)},
          {"token_source", storage::to_string(r.token_source)},
          {"bytes_client_to_upstream", r.bytes_client_to_upstream},
          {"bytes_upstream_to_client", r.bytes_upstream_to_client},
          {"messages", r.messages},
          {"close_reason", r.close_reason},
          {"event", r.event.empty() ? std::string("connection") : r.event},
          {"prev_hash", r.prev_hash},
          {"hash", r.hash}};
}

void print_json(const std::vector<storage::ConnectionRecord>& rows) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& r : rows) {
    out.push_back(to_json(r));
  }
  // A username is client input and may not be UTF-8: replace bad bytes instead of throwing.
  std::cout << out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
}

// RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled. Values are written
// exactly as stored (no spreadsheet-formula escaping, which would change them).
std::string csv_field(std::string_view value) {
  if (value.find_first_of(",\"\r\n") == std::string_view::npos) {
    return std::string(value);
  }
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') {
      out += "\"\"";
    } else {
      out.push_back(c);
    }
  }
  out += '"';
  return out;
}

void print_csv(const std::vector<storage::ConnectionRecord>& rows, bool header = true) {
  // The column names match the JSON keys. RFC 4180 lines end in CRLF.
  if (header) {
    std::cout << "id,started_at,ended_at,started_at_ms,ended_at_ms,client_address,client_port,"
                 "listener,username,account,outcome,token_source,bytes_client_to_upstream,"
                 "bytes_upstream_to_client,messages,close_reason,event,prev_hash,hash\r\n";
  }
  for (const auto& r : rows) {
    const std::array<std::string, 19> fields = {std::to_string(r.id),
                                                iso_time(r.started_at_ms, true),
                                                iso_time(r.ended_at_ms, true),
                                                std::to_string(r.started_at_ms),
                                                std::to_string(r.ended_at_ms),
                                                r.client_address,
                                                std::to_string(r.client_port),
                                                r.listener,
                                                r.username,
                                                r.account,
                                                std::string(storage::to_string(r.outcome)),
                                                std::string(storage::to_string(r.token_source)),
                                                std::to_string(r.bytes_client_to_upstream),
                                                std::to_string(r.bytes_upstream_to_client),
                                                std::to_string(r.messages),
                                                r.close_reason,
                                                r.event.empty() ? "connection" : r.event,
                                                r.prev_hash,
                                                r.hash};
    std::string line;
    for (std::size_t i = 0; i < fields.size(); ++i) {
      if (i > 0) {
        line += ',';
      }
      line += csv_field(fields[i]);
    }
    std::cout << line << "\r\n";
  }
}

std::int64_t time_flag(const std::string& flag, const std::string& value, std::int64_t now_ms) {
  auto t = parse_audit_time(value, now_ms);
  if (!t) {
    die(fmt::format(
        "{}: expected a UTC date (2026-11-27), a date-time (2026-11-27T10:00:00Z) or a duration "
        "back from now (24h, 7d), got \"{}\"",
        flag, value));
  }
  return *t;
}

void print_summary(const std::vector<storage::AccountActivity>& rows, const std::string& format) {
  if (format == "csv") {
    std::cout << "account,connections,failures,bytes_client_to_upstream,bytes_upstream_to_client,"
                 "distinct_clients,last_seen,last_refresh,status\r\n";
    for (const auto& a : rows) {
      std::cout << fmt::format(
          "{},{},{},{},{},{},{},{},{}\r\n", csv_field(a.account), a.connections, a.failures,
          a.bytes_client_to_upstream, a.bytes_upstream_to_client, a.distinct_clients,
          a.last_seen_ms ? iso_time(a.last_seen_ms, true) : "",
          a.last_refresh_ms ? iso_time(a.last_refresh_ms, true) : "", csv_field(a.status));
    }
    return;
  }
  if (format == "json") {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& a : rows) {
      out.push_back({{"account", a.account},
                     {"connections", a.connections},
                     {"failures", a.failures},
                     {"bytes_client_to_upstream", a.bytes_client_to_upstream},
                     {"bytes_upstream_to_client", a.bytes_upstream_to_client},
                     {"distinct_clients", a.distinct_clients},
                     {"last_seen", a.last_seen_ms ? iso_time(a.last_seen_ms, true) : ""},
                     {"last_refresh", a.last_refresh_ms ? iso_time(a.last_refresh_ms, true) : ""},
                     {"status", a.status}});
    }
    std::cout << out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    return;
  }
  constexpr std::size_t columns = 9;
  const std::array<std::string, columns> header = {
      "ACCOUNT", "CONNECTIONS",     "FAILURES",           "C->U",  "U->C",
      "CLIENTS", "LAST SEEN (UTC)", "LAST REFRESH (UTC)", "STATUS"};
  std::vector<std::array<std::string, columns>> cells;
  for (const auto& a : rows) {
    cells.push_back({a.account.empty() ? "(no account)" : printable(a.account),
                     std::to_string(a.connections), std::to_string(a.failures),
                     std::to_string(a.bytes_client_to_upstream),
                     std::to_string(a.bytes_upstream_to_client), std::to_string(a.distinct_clients),
                     a.last_seen_ms ? iso_time(a.last_seen_ms, false) : "-",
                     a.last_refresh_ms ? iso_time(a.last_refresh_ms, false) : "-",
                     a.status.empty() ? "-" : a.status});
  }
  print_aligned(header, cells);
}

// The master key, for --verify and --prune.
storage::MasterKey load_key(const Config& config) {
  auto key = storage::MasterKey::load(config.storage.key_file);
  if (!key) {
    // Not MasterKey::load's advice ("run init"): init refuses a database that exists.
    const auto& path = config.storage.key_file;
    die(
        fmt::format("verifying or pruning the connection log needs the master key (the chain is "
                    "keyed with it), and {}: restore the key file from your backup, or point "
                    "[storage] key_file at it",
                    fs::exists(path) ? key.error().message : path.string() + " does not exist"));
  }
  return std::move(*key);
}

std::int64_t now_millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// --follow: prints rows as they are written, like `tail -f`, until interrupted. Polls: SQLite
// has no cross-process notification, and a read of the newest ids every half second is cheap.
[[noreturn]] void follow(storage::AuditLog& log, storage::AuditQuery query,
                         const std::string& format) {
  const bool json = format == "json";
  bool unavailable = false;
  for (;;) {
    auto found = log.query(query);
    if (!found && found.error().code == Errc::storage_unavailable) {
      // A database server restarting (PostgreSQL) or a file locked for a moment: keep
      // following, say so once on stderr, and go on from the last row shown.
      if (!unavailable) {
        std::cerr << "audit --follow: " << sanitize_for_log(found.error().message)
                  << " (retrying)\n";
      }
      unavailable = true;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (unavailable) {
      std::cerr << "audit --follow: the log can be read again\n";
      unavailable = false;
    }
    const auto rows = check(std::move(found));
    if (!rows.empty()) {
      if (json) {
        // JSON Lines: one object per row, so a consumer can parse as rows arrive.
        for (const auto& r : rows) {
          std::cout << to_json(r).dump(-1, ' ', false,
                                       nlohmann::ordered_json::error_handler_t::replace)
                    << "\n";
        }
      } else if (format == "csv") {
        print_csv(rows, query.after_id == 0);  // one header, before the first rows
      } else {
        print_table(rows);
      }
      std::cout.flush();
      query.after_id = rows.back().id;
    }
    query.limit = 0;  // --limit applies to the rows shown first only
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int audit(const AuditOptions& options) {
  const auto config = check(load_effective_config(options.config));
  const std::string path = config.storage.connection_log.native();
  const Secret password = check(connection_log_password(config));
  // A read command must not create an empty database in a wrong place (a mistyped --config).
  if (!is_postgres_url(path) && !fs::exists(path)) {
    die(
        fmt::format("no database at {}: nothing was logged yet, or the configuration is not "
                    "the one `serve` uses",
                    path));
  }

  if (options.verify) {
    std::optional<storage::AuditAnchor> anchor;
    if (options.expect_head) {
      anchor = storage::parse_audit_anchor(*options.expect_head);
      if (!anchor) {
        die(
            fmt::format("--expect-head: expected N:HASH as `audit --verify` prints the head "
                        "(a row id, a colon and 64 hex digits), got \"{}\"",
                        *options.expect_head));
      }
    }
    // For verifying: writes nothing, so what was found is what is reported.
    auto log = check(storage::AuditLog::open_for_verifying(path, password, load_key(config)));
    const auto report = check(log->verify(anchor));
    if (!report.intact) {
      std::cerr << fmt::format("audit log BROKEN at row {}: {}\n", report.broken_at, report.reason);
      return 1;
    }
    std::cout << fmt::format("audit log intact: {} rows", report.rows);
    if (report.first_id > 1) {
      std::cout << fmt::format(" (rows before {} removed by retention)", report.first_id);
    }
    if (report.unkeyed_rows > 0) {
      std::cout << fmt::format(
          " (rows 1 to {} are from before the chain was keyed, checked as a plain SHA-256 chain; "
          "the next start of serve keys the log)",
          report.unkeyed_rows);
    }
    if (anchor) {
      std::cout << fmt::format(", anchor {}:{} found", anchor->id, anchor->hash);
    }
    std::cout << fmt::format("\nhead {}:{}\n", report.head_id, report.head_hash);
    return 0;
  }

  if (options.prune) {
    if (config.audit.keep_days <= 0) {
      die("--prune: [audit] keep_days is 0 (keep everything) in the configuration: set it to "
          "the number of days to keep");
    }
    auto log = check(storage::AuditLog::open(path, password, load_key(config)));
    const auto now_ms = now_millis();
    const auto report =
        check(log->prune(now_ms - std::int64_t{config.audit.keep_days} * 86'400'000, now_ms));
    std::cout << fmt::format("pruned {} rows older than {} days; the log starts at row {}\n",
                             report.deleted, config.audit.keep_days, report.first_kept);
    return 0;
  }

  auto log = check(storage::AuditLog::open_for_reading(path, password));
  const auto now_ms = now_millis();
  storage::AuditQuery query;
  if (options.since) {
    query.since_ms = time_flag("--since", *options.since, now_ms);
  }
  if (options.until) {
    query.until_ms = time_flag("--until", *options.until, now_ms);
  }
  if (query.since_ms && query.until_ms && *query.since_ms >= *query.until_ms) {
    die("--since must be before --until");
  }
  if (options.summary) {
    print_summary(check(log->summarize(query.since_ms)), options.format);
    return 0;
  }
  if (options.account) {
    query.account = check(normalize_email(*options.account));
  }
  if (options.outcome) {
    query.outcome = storage::parse_connection_outcome(*options.outcome);
    if (!query.outcome) {
      die(
          fmt::format("--outcome: unknown outcome \"{}\" (ok, auth_failed, needs_reauth, "
                      "upstream_unavailable, protocol_error, timeout, internal_error, shutdown, "
                      "rejected)",
                      *options.outcome));
    }
  }
  if (options.client) {
    // As the table shows it ("127.0.0.1:57858", "[::1]:40001") or just the address.
    const std::string_view client = *options.client;
    if (client.find('[') == std::string_view::npos &&
        std::count(client.begin(), client.end(), ':') > 1) {
      query.client_address = std::string(client);  // a bare IPv6 address
    } else {
      auto authority = parse_authority(client);
      if (!authority) {
        die(
            fmt::format("--client: expected an address, optionally with its port "
                        "(127.0.0.1, 127.0.0.1:57858, [::1]:40001), got \"{}\"",
                        *options.client));
      }
      query.client_address = authority->host;
      query.client_port = authority->port;
    }
  }
  if (options.event) {
    if (*options.event != "connection" && !storage::parse_audit_event(*options.event)) {
      die(
          fmt::format("--event: unknown event \"{}\" (connection, account_added, "
                      "account_removed, passwd_changed, refresh_ok, refresh_failed, needs_reauth, "
                      "reauthorized, audit_rows_dropped, retention, chain_keyed)",
                      *options.event));
    }
    query.event = *options.event;
  }
  query.limit = options.limit;
  if (options.follow) {
    follow(*log, query, options.format);
  }
  const auto rows = check(log->query(query));
  if (options.format == "json") {
    print_json(rows);
  } else if (options.format == "csv") {
    print_csv(rows);
  } else {
    print_table(rows);
  }
  return 0;
}

}  // namespace

std::optional<std::int64_t> parse_audit_time(std::string_view text, std::int64_t now_ms) {
  if (auto back = parse_duration(text)) {
    return now_ms - back->count();
  }
  // YYYY-MM-DD
  const auto year = digits_at(text, 0, 4);
  const auto month = digits_at(text, 5, 2);
  const auto day = digits_at(text, 8, 2);
  if (text.size() < 10 || !year || !month || !day || text[4] != '-' || text[7] != '-') {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{std::chrono::year(*year),
                                         std::chrono::month(static_cast<unsigned>(*month)),
                                         std::chrono::day(static_cast<unsigned>(*day))};
  if (!date.ok()) {
    return std::nullopt;
  }
  std::int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::sys_days(date).time_since_epoch())
                        .count();
  std::string_view rest = text.substr(10);
  if (rest.empty()) {
    return ms;
  }
  // [T ]HH:MM[:SS][Z]
  if (rest[0] != 'T' && rest[0] != 't' && rest[0] != ' ') {
    return std::nullopt;
  }
  rest.remove_prefix(1);
  if (!rest.empty() && (rest.back() == 'Z' || rest.back() == 'z')) {
    rest.remove_suffix(1);
  }
  const auto hour = digits_at(rest, 0, 2);
  const auto minute = digits_at(rest, 3, 2);
  if (!hour || !minute || rest[2] != ':' || *hour > 23 || *minute > 59) {
    return std::nullopt;
  }
  int second = 0;
  if (rest.size() == 8 && rest[5] == ':') {
    const auto s = digits_at(rest, 6, 2);
    if (!s || *s > 59) {
      return std::nullopt;
    }
    second = *s;
  } else if (rest.size() != 5) {
    return std::nullopt;
  }
  ms += ((static_cast<std::int64_t>(*hour) * 60 + *minute) * 60 + second) * 1000;
  return ms;
}

CLI::App* add_audit_command(CLI::App& app, AuditOptions& options) {
  auto* cmd = app.add_subcommand("audit", "show or verify the connection log (no secrets)");
  auto* since = cmd->add_option("--since", options.since,
                                "connections open at or after T: 2026-11-27, "
                                "2026-11-27T10:00:00Z (UTC) or a duration back (24h, 7d)");
  auto* until =
      cmd->add_option("--until", options.until, "connections that started before T (as --since)");
  auto* account = cmd->add_option("--account", options.account, "only this account's rows");
  auto* format = cmd->add_option("--format", options.format, "table (default), json or csv")
                     ->check(CLI::IsMember({"table", "json", "csv"}));
  auto* limit =
      cmd->add_option("--limit", options.limit, "only the newest N matching rows (0: all)")
          ->check(CLI::Range(std::int64_t{0}, std::numeric_limits<std::int64_t>::max(),
                             "a number of rows (0: all)"));
  auto* outcome = cmd->add_option("--outcome", options.outcome,
                                  "only rows with this outcome (ok, auth_failed, needs_reauth...)");
  auto* client = cmd->add_option("--client", options.client, "only rows from this client address");
  auto* event = cmd->add_option("--event", options.event,
                                "only this event (connection, refresh_ok, refresh_failed, "
                                "needs_reauth, reauthorized, account_added, account_removed, "
                                "passwd_changed...)");
  auto* follow = cmd->add_flag("--follow,-f", options.follow,
                               "keep printing new rows as they are written (like tail -f)");
  auto* summary = cmd->add_flag("--summary", options.summary,
                                "per account: connections, failures, bytes, clients, last seen, "
                                "last refresh, status")
                      ->excludes(until)
                      ->excludes(account)
                      ->excludes(limit)
                      ->excludes(outcome)
                      ->excludes(client)
                      ->excludes(event)
                      ->excludes(follow);
  auto* expect =
      cmd->add_option("--expect-head", options.expect_head,
                      "with --verify: the head printed by an earlier --verify (N:HASH) must "
                      "still be in the chain (detects a cut tail or a rewritten log)");
  auto* prune = cmd->add_flag("--prune", options.prune,
                              "delete rows older than [audit] keep_days (the chain stays "
                              "verifiable)");
  auto* verify =
      cmd->add_flag("--verify", options.verify,
                    "check the keyed hash chain: exit 0 when intact (printing the head), 1 naming "
                    "the first broken row");
  for (auto* other :
       {since, until, account, format, limit, outcome, client, event, follow, summary, prune}) {
    verify->excludes(other);
  }
  for (auto* other :
       {since, until, account, format, limit, outcome, client, event, follow, summary, expect}) {
    prune->excludes(other);
  }
  expect->needs(verify);
  cmd->add_option("--config", options.config, "configuration file");
  return cmd;
}

int run_audit(const AuditOptions& options) {
  try {
    return audit(options);
  } catch (const CommandError& e) {
    std::cerr << "imap-oauth2-proxy: " << e.message << "\n";
    return e.exit_code;
  }
}

}  // namespace iop::app
