// `imap-oauth2-proxy audit`, as the built binary, over a connection log written with AuditLog.

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "storage/audit_log.hpp"
#include "tests/support/cli_env.hpp"

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

  // Writes the rows through AuditLog, as `serve` does.
  void write(const std::vector<ConnectionRecord>& rows) {
    auto log = storage::AuditLog::open(db_path());
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
  auto second = row(jun1_10h + 1000, jun1_10h + 1200, "", ConnectionOutcome::auth_failed);
  second.username = "mallory\x1b[31m";  // an escape sequence a client sent as its username
  second.client_address = "::1";
  second.listener = "starttls:127.0.0.1:1143";
  second.token_source = TokenSource::none;
  second.bytes_upstream_to_client = 0;
  second.close_reason = "said \"no\", then\r\nclosed";
  auto third = row(jun1_10h + day_ms, jun1_10h + day_ms + 5, "bob@example.com",
                   ConnectionOutcome::needs_reauth);
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
                             "OUTCOME", "TOKEN", "CLOSE REASON"}) {
    EXPECT_NE(header.find(column), std::string::npos) << column;
  }
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 4) << r.out;
  EXPECT_NE(r.out.find("2025-06-01 10:00:00.000Z"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("alice@example.com"), std::string::npos);
  EXPECT_NE(r.out.find("Session invalidated - AccessTokenExpired"), std::string::npos);
  EXPECT_NE(r.out.find("auth_failed"), std::string::npos);
  EXPECT_NE(r.out.find("[::1]:40001"), std::string::npos);
  EXPECT_NE(r.out.find("1m30s"), std::string::npos) << "duration of row 1";
  EXPECT_NE(r.out.find("mallory\\x1b[31m"), std::string::npos) << r.out;
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
  EXPECT_EQ(json[1]["username"], "mallory\\x1b[31m");
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
                                           "close_reason",
                                           "prev_hash",
                                           "hash"};
  EXPECT_EQ(records[0], header);
  for (const auto& rec : records) {
    EXPECT_EQ(rec.size(), header.size());
  }
  EXPECT_EQ(records[1][0], "1");
  EXPECT_EQ(records[1][1], "2025-06-01T10:00:00.000Z");
  EXPECT_EQ(records[1][10], "ok");
  EXPECT_EQ(records[2][14], "said \"no\", then\\r\\nclosed");  // stored sanitized
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
  EXPECT_EQ(r.out, "audit log intact: 3 rows\n");

  tamper(db_path(), "UPDATE connection_log SET outcome = 'ok' WHERE id = 2");
  r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("audit log BROKEN at row 2: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("edited"), std::string::npos) << r.err;
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

TEST_F(AuditCliTest, NeedsNoMasterKeyAndAnEmptyLogVerifies) {
  write({});
  ASSERT_FALSE(fs::exists(dir_.path() / "data/master.key"));
  auto r = audit({"--verify"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "audit log intact: 0 rows\n");
  r = audit({"--format", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::array());
  EXPECT_FALSE(fs::exists(dir_.path() / "data/master.key")) << "audit must not create a key";
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
