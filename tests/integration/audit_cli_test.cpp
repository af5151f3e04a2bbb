// `imap-oauth2-proxy audit`, as the built binary, over a connection log written with AuditLog.

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "storage/audit_log.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

namespace fs = std::filesystem;
using storage::ConnectionOutcome;
using storage::ConnectionRecord;
using storage::TokenSource;

constexpr std::int64_t day_ms = 24LL * 3600 * 1000;
// 2025-06-01T10:00:00Z: fixed rows well before any "now" the tests run at.
constexpr std::int64_t jun1_10h = 1'748'772'000'000;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Raw SQL on the database file, as an attacker would: drops the append-only triggers first.
void tamper(const fs::path& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char* err = nullptr;
  const std::string all =
      "DROP TRIGGER IF EXISTS connection_log_no_update;"
      "DROP TRIGGER IF EXISTS connection_log_no_delete;" +
      sql;
  EXPECT_EQ(sqlite3_exec(db, all.c_str(), nullptr, nullptr, &err), SQLITE_OK)
      << (err != nullptr ? err : "") << " in: " << sql;
  sqlite3_free(err);
  sqlite3_close_v2(db);
}

// RFC 4180 records: quoted fields with doubled quotes, CRLF between records.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> record;
  std::string field;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field.push_back(c);
      }
    } else if (c == '"' && field.empty()) {
      quoted = true;
    } else if (c == ',') {
      record.push_back(std::move(field));
      field.clear();
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      record.push_back(std::move(field));
      field.clear();
      records.push_back(std::move(record));
      record.clear();
      ++i;
    } else if (c == '"' || c == '\r' || c == '\n') {
      ADD_FAILURE() << "unquoted quote or bare line break at byte " << i;
    } else {
      field.push_back(c);
    }
  }
  EXPECT_TRUE(field.empty() && record.empty()) << "the last record must end in CRLF";
  return records;
}

class AuditCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The token endpoint is never called by `audit`; a loopback URL keeps the config valid.
    config_ = write_cli_config(dir_.path(), {"http://127.0.0.1:9/token", "", "", ""});
    fs::create_directories(dir_.path() / "data");
  }

  [[nodiscard]] fs::path db_path() const { return dir_.path() / "data/credentials.db"; }

  // Writes the rows through AuditLog, as `serve` does (keyed with data/master.key, created the
  // first time).
  void write(const std::vector<ConnectionRecord>& rows) {
    auto key = storage::MasterKey::load_or_create(dir_.path() / "data/master.key");
    ASSERT_TRUE(key.has_value()) << key.error().message;
    auto log = storage::AuditLog::open(db_path(), *key);
    ASSERT_TRUE(log.has_value()) << log.error().message;
    for (const auto& r : rows) {
      auto id = (*log)->append(r);
      ASSERT_TRUE(id.has_value()) << id.error().message;
    }
  }

  CommandResult audit(std::vector<std::string> args) {
    args.insert(args.begin(), "audit");
    return run_cli(config_, std::move(args));
  }

  // The ids in a JSON listing, in order.
  std::vector<std::int64_t> ids(std::vector<std::string> args) {
    args.emplace_back("--format");
    args.emplace_back("json");
    const auto r = audit(std::move(args));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::int64_t> out;
    for (const auto& row : nlohmann::json::parse(r.out)) {
      out.push_back(row["id"].get<std::int64_t>());
    }
    return out;
  }

  TempDir dir_;
  fs::path config_;
};

ConnectionRecord row(std::int64_t started, std::int64_t ended, std::string account,
                     ConnectionOutcome outcome = ConnectionOutcome::ok) {
  ConnectionRecord r;
  r.started_at_ms = started;
  r.ended_at_ms = ended;
  r.client_address = "127.0.0.1";
  r.client_port = 40'001;
  r.listener = "tls:127.0.0.1:1993";
  r.username = account;
  r.account = std::move(account);
  r.outcome = outcome;
  r.token_source = TokenSource::database;
  r.bytes_client_to_upstream = 1234;
  r.bytes_upstream_to_client = 987'654;
  r.close_reason = "client closed";
  return r;
}

// The three rows most tests use: ids 1..3.
std::vector<ConnectionRecord> sample() {
  auto first = row(jun1_10h, jun1_10h + 90'000, "alice@example.com");
  first.token_source = TokenSource::refresh;
  first.close_reason = "Session invalidated - AccessTokenExpired";
  first.messages = 2;  // a submission session
  auto second = row(jun1_10h + 1000, jun1_10h + 1200, "", ConnectionOutcome::auth_failed);
  // An escape sequence a client sent as its username: not an email, so only its length is kept.
  second.username = "mallory\x1b[31m";
  second.client_address = "::1";
  second.listener = "starttls:127.0.0.1:1143";
  second.token_source = TokenSource::none;
  second.bytes_upstream_to_client = 0;
  second.close_reason = "said \"no\", then\r\nclosed";
  auto third = row(jun1_10h + day_ms, jun1_10h + day_ms + 5, "bob@example.com",
                   ConnectionOutcome::needs_reauth);
  third.close_reason = "upstream BYE \x1b[31mbye";  // an escape sequence an upstream sent
  return {first, second, third};
}

TEST_F(AuditCliTest, TableHasAHeaderAndOneLinePerRowWithControlBytesEscaped) {
  write(sample());
  const auto r = audit({});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto header_end = r.out.find('\n');
  ASSERT_NE(header_end, std::string::npos);
  const auto header = r.out.substr(0, header_end);
  for (const char* column : {"ID", "STARTED (UTC)", "CLIENT", "LISTENER", "USERNAME", "ACCOUNT",
                             "MSGS", "OUTCOME", "TOKEN", "CLOSE REASON"}) {
    EXPECT_NE(header.find(column), std::string::npos) << column;
  }
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 4) << r.out;
  EXPECT_NE(r.out.find("2025-06-01 10:00:00.000Z"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("alice@example.com"), std::string::npos);
  EXPECT_NE(r.out.find("Session invalidated - AccessTokenExpired"), std::string::npos);
  EXPECT_NE(r.out.find("auth_failed"), std::string::npos);
  EXPECT_NE(r.out.find("[::1]:40001"), std::string::npos);
  EXPECT_NE(r.out.find("1m30s"), std::string::npos) << "duration of row 1";
  EXPECT_NE(r.out.find("upstream BYE \\x1b[31mbye"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("<not an email, 12 bytes>"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "no raw escape byte reaches the terminal";
}

TEST_F(AuditCliTest, JsonIsAnArrayOfObjectsWithEveryField) {
  write(sample());
  const auto r = audit({"--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  ASSERT_TRUE(json.is_array());
  ASSERT_EQ(json.size(), 3u);
  const auto& a = json[0];
  EXPECT_EQ(a["id"], 1);
  EXPECT_EQ(a["started_at"], "2025-06-01T10:00:00.000Z");
  EXPECT_EQ(a["ended_at"], "2025-06-01T10:01:30.000Z");
  EXPECT_EQ(a["started_at_ms"], jun1_10h);
  EXPECT_EQ(a["client_address"], "127.0.0.1");
  EXPECT_EQ(a["client_port"], 40'001);
  EXPECT_EQ(a["listener"], "tls:127.0.0.1:1993");
  EXPECT_EQ(a["username"], "alice@example.com");
  EXPECT_EQ(a["account"], "alice@example.com");
  EXPECT_EQ(a["outcome"], "ok");
  EXPECT_EQ(a["token_source"], "refresh");
  EXPECT_EQ(a["bytes_client_to_upstream"], 1234);
  EXPECT_EQ(a["bytes_upstream_to_client"], 987'654);
  EXPECT_EQ(a["close_reason"], "Session invalidated - AccessTokenExpired");
  EXPECT_EQ(a["prev_hash"], storage::audit_genesis_hash());
  EXPECT_EQ(json[1]["prev_hash"], a["hash"]);
  // Stored sanitized (storage/audit_log.cpp, common/sanitize.hpp): the escape is visible text.
  EXPECT_EQ(json[1]["username"], "<not an email, 12 bytes>");
  EXPECT_EQ(json[2]["close_reason"], "upstream BYE \\x1b[31mbye");
  EXPECT_EQ(json[1]["token_source"], "");
  EXPECT_EQ(json[1]["close_reason"], "said \"no\", then\\r\\nclosed");
  EXPECT_EQ(json[2]["outcome"], "needs_reauth");
}

TEST_F(AuditCliTest, CsvQuotesPerRfc4180) {
  write(sample());
  const auto r = audit({"--format", "csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto records = parse_csv(r.out);
  ASSERT_EQ(records.size(), 4u);
  const std::vector<std::string> header = {"id",
                                           "started_at",
                                           "ended_at",
                                           "started_at_ms",
                                           "ended_at_ms",
                                           "client_address",
                                           "client_port",
                                           "listener",
                                           "username",
                                           "account",
                                           "outcome",
                                           "token_source",
                                           "bytes_client_to_upstream",
                                           "bytes_upstream_to_client",
                                           "messages",
                                           "close_reason",
                                           "event",
                                           "prev_hash",
                                           "hash"};
  EXPECT_EQ(records[0], header);
  for (const auto& rec : records) {
    EXPECT_EQ(rec.size(), header.size());
  }
  EXPECT_EQ(records[1][0], "1");
  EXPECT_EQ(records[1][1], "2025-06-01T10:00:00.000Z");
  EXPECT_EQ(records[1][10], "ok");
  EXPECT_EQ(records[1][14], "2");                              // messages
  EXPECT_EQ(records[2][15], "said \"no\", then\\r\\nclosed");  // stored sanitized
  EXPECT_EQ(records[2][5], "::1");
  EXPECT_EQ(records[3][9], "bob@example.com");
  EXPECT_NE(r.out.find("\"said \"\"no\"\", then\\r\\nclosed\""), std::string::npos) << r.out;
}

TEST_F(AuditCliTest, FiltersByAccountTimeAndLimit) {
  auto rows = sample();
  const auto now = now_ms();
  rows.push_back(row(now - 2 * 3600 * 1000, now - 3600 * 1000, "alice@example.com"));  // 4
  rows.push_back(row(now - 60'000, now - 1000, "carol@example.com"));                  // 5
  write(rows);
  using V = std::vector<std::int64_t>;
  EXPECT_EQ(ids({}), (V{1, 2, 3, 4, 5}));
  // The account is normalized like every other CLI email argument.
  EXPECT_EQ(ids({"--account", "Alice@Example.COM"}), (V{1, 4}));
  EXPECT_EQ(ids({"--since", "2025-06-02"}), (V{3, 4, 5}));
  EXPECT_EQ(ids({"--since", "2025-06-01T10:00:01Z"}), (V{1, 2, 3, 4, 5}));
  EXPECT_EQ(ids({"--since", "2025-06-01T10:01:31Z"}), (V{3, 4, 5}));
  EXPECT_EQ(ids({"--until", "2025-06-01T10:00:01Z"}), (V{1}));
  EXPECT_EQ(ids({"--since", "2025-06-01", "--until", "2025-06-02"}), (V{1, 2}));
  EXPECT_EQ(ids({"--since", "30m"}), (V{5}));
  EXPECT_EQ(ids({"--since", "3h"}), (V{4, 5}));
  EXPECT_EQ(ids({"--since", "3h", "--account", "alice@example.com"}), (V{4}));
  EXPECT_EQ(ids({"--limit", "2"}), (V{4, 5}));
  EXPECT_EQ(ids({"--account", "nobody@example.com"}), V{});
}

TEST_F(AuditCliTest, VerifyReportsIntactThenTheFirstBrokenRow) {
  write(sample());
  auto r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "audit log intact: 3 rows");
  EXPECT_NE(r.out.find("\nhead 3:"), std::string::npos) << r.out;

  tamper(db_path(), "UPDATE connection_log SET outcome = 'ok' WHERE id = 2");
  r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("audit log BROKEN at row 2: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("edited"), std::string::npos) << r.err;
}

// What an operator (or an intruder) does with the sqlite3 shell on the file: alter, insert and
// delete rows (dropping the append-only triggers first), then rewrite the head to match.
TEST_F(AuditCliTest, VerifyCatchesEditsMadeWithTheSqlite3Shell) {
  const auto shell = [&](const std::string& sql) {
    const auto r = run_command({"sqlite3", db_path().string(), sql});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  };
  const auto broken_at = [&](const std::string& row) {
    const auto r = audit({"--verify"});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.err.find("audit log BROKEN at row " + row + ":"), std::string::npos) << r.err;
  };
  const std::string drop =
      "DROP TRIGGER IF EXISTS connection_log_no_update; "
      "DROP TRIGGER IF EXISTS connection_log_no_delete; ";
  write(sample());
  write({row(jun1_10h + 2 * day_ms, jun1_10h + 2 * day_ms + 1, "carol@example.com")});
  ASSERT_EQ(audit({"--verify"}).exit_code, 0);
  // The shell's own backup and restore: consistent with the WAL, as an operator would take it.
  const auto backup = (dir_.path() / "backup.db").string();
  shell(".backup '" + backup + "'");
  const auto restore = [&] {
    shell(".restore '" + backup + "'");
    ASSERT_EQ(audit({"--verify"}).exit_code, 0);
  };

  shell(drop + "UPDATE connection_log SET bytes_upstream_to_client = 1 WHERE id = 2;");
  broken_at("2");
  restore();
  shell(drop +
        "INSERT INTO connection_log SELECT 5, started_at_ms, ended_at_ms, client_address, "
        "client_port, listener, username, account, outcome, token_source, "
        "bytes_client_to_upstream, bytes_upstream_to_client, close_reason, hash, hash, "
        "messages, event FROM connection_log WHERE id = 4;");
  broken_at("5");
  restore();
  shell(drop + "DELETE FROM connection_log WHERE id = 2;");
  broken_at("2");
  restore();
  // The tail cut and the head rewritten to the new last row (its hash copied): the head's MAC
  // gives it away.
  shell(drop +
        "DELETE FROM connection_log WHERE id = 4; UPDATE meta SET value = '3 ' || "
        "(SELECT hash FROM connection_log WHERE id = 3) WHERE key = 'connection_log_head';");
  broken_at("3");
}

TEST_F(AuditCliTest, VerifyDetectsDeletions) {
  write(sample());
  tamper(db_path(), "DELETE FROM connection_log WHERE id = 3");
  auto r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("audit log BROKEN at row 3: "), std::string::npos) << r.err;

  tamper(db_path(), "DELETE FROM connection_log WHERE id = 1");
  r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("audit log BROKEN at row 1: "), std::string::npos) << r.err;
}

TEST_F(AuditCliTest, ReadingNeedsNoMasterKeyVerifyingDoes) {
  write({});
  auto r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("audit log intact: 0 rows"), std::string::npos) << r.out;
  write(sample());
  fs::rename(dir_.path() / "data/master.key", dir_.path() / "elsewhere.key");
  r = audit({"--format", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 3u);
  r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("needs the master key"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_.path() / "data/master.key")) << "audit must not create a key";
}

// A login that matched no account keeps its username only when it is an email: people type
// passwords into the user field (issue #8).
TEST_F(AuditCliTest, UnknownUsernamesAreKeptOnlyWhenTheyAreEmails) {
  auto typo = row(jun1_10h, jun1_10h + 1, "", ConnectionOutcome::auth_failed);
  typo.username = "Tr0ub4dor&3";
  auto unknown = row(jun1_10h + 2, jun1_10h + 3, "", ConnectionOutcome::auth_failed);
  unknown.username = "someone@example.org";
  write({typo, unknown});
  const auto r = audit({"--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json[0]["username"], "<not an email, 11 bytes>");
  EXPECT_EQ(json[1]["username"], "someone@example.org");
  EXPECT_EQ(r.out.find("Tr0ub4dor"), std::string::npos);
}

TEST_F(AuditCliTest, FiltersByOutcomeClientAndEvent) {
  auto rows = sample();
  rows.push_back(storage::event_record(storage::AuditEvent::refresh_failed, "bob@example.com",
                                       "transient temporarily_unavailable (HTTP 503)",
                                       jun1_10h + day_ms + 10));  // 4
  rows.push_back(storage::event_record(storage::AuditEvent::needs_reauth, "bob@example.com",
                                       "permanent invalid_grant AADSTS70008",
                                       jun1_10h + day_ms + 20));  // 5
  write(rows);
  using V = std::vector<std::int64_t>;
  EXPECT_EQ(ids({"--outcome", "auth_failed"}), V{2});
  EXPECT_EQ(ids({"--outcome", "needs_reauth"}), (V{3, 5}));
  EXPECT_EQ(ids({"--client", "::1"}), V{2});
  // As the table shows the client, with its port.
  EXPECT_EQ(ids({"--client", "[::1]:40001"}), V{2});
  EXPECT_EQ(ids({"--client", "127.0.0.1:40001"}), (V{1, 3}));
  EXPECT_EQ(ids({"--client", "127.0.0.1:40002"}), V{});
  EXPECT_EQ(ids({"--event", "needs_reauth"}), V{5});
  EXPECT_EQ(ids({"--event", "connection"}), (V{1, 2, 3}));
  EXPECT_EQ(ids({"--event", "refresh_failed", "--account", "bob@example.com"}), V{4});
  const auto table = audit({"--account", "bob@example.com"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("AADSTS70008"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("needs_reauth"), std::string::npos) << table.out;
  auto r = audit({"--outcome", "fine"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown outcome"), std::string::npos) << r.err;
  r = audit({"--event", "coffee"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown event"), std::string::npos) << r.err;
}

TEST_F(AuditCliTest, SummaryMatchesTheRows) {
  auto rows = sample();
  auto again = row(jun1_10h + 5000, jun1_10h + 6000, "alice@example.com",
                   ConnectionOutcome::upstream_unavailable);
  again.client_address = "10.1.2.3";
  rows.push_back(again);
  rows.push_back(storage::event_record(storage::AuditEvent::refresh_ok, "alice@example.com",
                                       "refresh token", jun1_10h + 3000));
  write(rows);
  auto r = audit({"--summary", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  ASSERT_EQ(json.size(), 3u) << r.out;  // alice, bob, mallory
  const auto& alice = json[0];
  EXPECT_EQ(alice["account"], "alice@example.com");
  EXPECT_EQ(alice["connections"], 2);
  EXPECT_EQ(alice["failures"], 1);
  EXPECT_EQ(alice["bytes_client_to_upstream"], 2 * 1234);
  EXPECT_EQ(alice["bytes_upstream_to_client"], 2 * 987'654);
  EXPECT_EQ(alice["distinct_clients"], 2);
  EXPECT_EQ(alice["last_seen"], "2025-06-01T10:01:30.000Z");  // row 1 ends last
  EXPECT_EQ(alice["last_refresh"], "2025-06-01T10:00:03.000Z");
  EXPECT_EQ(alice["status"], "removed");  // no such account in the credentials table
  EXPECT_EQ(json[1]["account"], "bob@example.com");
  EXPECT_EQ(json[1]["failures"], 1);
  r = audit({"--summary", "--format", "csv"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto csv = parse_csv(r.out);
  ASSERT_EQ(csv.size(), 4u) << r.out;  // the header and three lines
  EXPECT_EQ(csv[0][0], "account");
  EXPECT_EQ(csv[1][0], "alice@example.com");
  EXPECT_EQ(csv[1][1], "2");
  r = audit({"--summary", "--since", "2025-06-02"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bob@example.com"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("alice@example.com"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CONNECTIONS"), std::string::npos) << r.out;
}

TEST_F(AuditCliTest, ExpectHeadCatchesACutTail) {
  write(sample());
  auto r = audit({"--verify"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto at = r.out.find("head ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string head = r.out.substr(at + 5, r.out.find('\n', at) - at - 5);  // "3:HASH"
  write({row(jun1_10h + 2 * day_ms, jun1_10h + 2 * day_ms + 1, "alice@example.com")});
  r = audit({"--verify", "--expect-head", head});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("anchor " + head + " found"), std::string::npos) << r.out;
  // A row that is not what the anchor says (the log was rewritten from there on), and an anchor
  // past the end (the tail was cut; the unit tests replay a genuine old head for this).
  r = audit({"--verify", "--expect-head", "3:" + std::string(64, 'f')});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("BROKEN at row 3"), std::string::npos) << r.err;
  r = audit({"--verify", "--expect-head", "9:" + head.substr(2)});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cut off"), std::string::npos) << r.err;
  r = audit({"--verify", "--expect-head", "0:" + head.substr(2)});
  EXPECT_EQ(r.exit_code, 1) << "row ids start at 1";
  r = audit({"--verify", "--expect-head", "garbage"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("N:HASH"), std::string::npos) << r.err;
  r = audit({"--expect-head", head});
  EXPECT_NE(r.exit_code, 0) << "--expect-head needs --verify";
}

TEST_F(AuditCliTest, PruneKeepsTheRestVerifiable) {
  auto rows = sample();  // June 2025: older than any keep_days window
  const auto now = now_ms();
  rows.push_back(row(now - 1000, now - 500, "carol@example.com"));  // 4
  write(rows);
  auto r = audit({"--prune"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("keep_days"), std::string::npos) << r.err;
  std::ofstream(config_, std::ios::app) << "[audit]\nkeep_days = 30\n";
  r = audit({"--prune"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("pruned 3 rows"), std::string::npos) << r.out;
  EXPECT_EQ(ids({}), (std::vector<std::int64_t>{4, 5}));
  r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("rows before 4 removed by retention"), std::string::npos) << r.out;
  EXPECT_EQ(ids({"--event", "retention"}), std::vector<std::int64_t>{5});
}

TEST_F(AuditCliTest, FollowPrintsRowsAsTheyAreWritten) {
  write(sample());
  const auto out = dir_.path() / "follow.out";
  auto follow = Process::start(
      {binary_path(), "audit", "--follow", "--format", "json", "--config", config_.string()}, out);
  ASSERT_TRUE(wait_until([&] { return count_of(read_file(out), "\"id\":") >= 3; }))
      << read_file(out);
  write({row(jun1_10h + 2 * day_ms, jun1_10h + 2 * day_ms + 1, "dave@example.com")});
  ASSERT_TRUE(wait_until([&] {
    return read_file(out).find("dave@example.com") != std::string::npos;
  })) << read_file(out);
  EXPECT_TRUE(follow.running());
  follow.kill_and_wait();
  // JSON Lines: every line is one row, each printed once.
  std::istringstream lines(read_file(out));
  std::vector<std::int64_t> seen;
  for (std::string line; std::getline(lines, line);) {
    seen.push_back(nlohmann::json::parse(line)["id"].get<std::int64_t>());
  }
  EXPECT_EQ(seen, (std::vector<std::int64_t>{1, 2, 3, 4}));
}

TEST_F(AuditCliTest, ClearErrors) {
  // No database: a one-line reason, and no file is created by a read command.
  auto r = audit({});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no database at"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(db_path()));

  write(sample());
  r = audit({"--since", "yesterday"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--since"), std::string::npos) << r.err;
  r = audit({"--since", "2026-02-30"});
  EXPECT_EQ(r.exit_code, 1) << "not a date";
  r = audit({"--until", "2026-11-27T25:00:00Z"});
  EXPECT_EQ(r.exit_code, 1) << "not a time";
  r = audit({"--since", "2026-11-28", "--until", "2026-11-27"});
  EXPECT_EQ(r.exit_code, 1);
  r = audit({"--account", "not an email"});
  EXPECT_EQ(r.exit_code, 1);
  r = audit({"--format", "xml"});
  EXPECT_NE(r.exit_code, 0);
  r = audit({"--verify", "--since", "1d"});
  EXPECT_NE(r.exit_code, 0) << "--verify checks the whole log; filters make no sense with it";
  r = audit({"--limit", "-1"});
  EXPECT_NE(r.exit_code, 0);
}

}  // namespace
}  // namespace iop::test
