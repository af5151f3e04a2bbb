#include "storage/audit_log.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "storage/credentials_store.hpp"
#include "storage/database.hpp"
#include "storage/sealed.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_db.hpp"

namespace iop::storage {
namespace {

namespace fs = std::filesystem;
using test::RawDb;

ConnectionRecord record(std::int64_t started_ms, std::int64_t ended_ms, std::string account,
                        ConnectionOutcome outcome = ConnectionOutcome::ok) {
  ConnectionRecord r;
  r.started_at_ms = started_ms;
  r.ended_at_ms = ended_ms;
  r.client_address = "127.0.0.1";
  r.client_port = 50'000;
  r.listener = "tls:127.0.0.1:1993";
  r.username = account.empty() ? "nobody@example.com" : account;
  r.account = std::move(account);
  r.outcome = outcome;
  r.token_source = outcome == ConnectionOutcome::ok ? TokenSource::redis : TokenSource::none;
  r.bytes_client_to_upstream = 100;
  r.bytes_upstream_to_client = 2000;
  r.close_reason = "client closed";
  return r;
}

AuditQuery make_query(std::optional<std::int64_t> since, std::optional<std::int64_t> until,
                      std::optional<std::string> account = std::nullopt, std::int64_t limit = 0) {
  AuditQuery q;
  q.since_ms = since;
  q.until_ms = until;
  q.account = std::move(account);
  q.limit = limit;
  return q;
}

MasterKey test_key(char fill = 'k') {
  return MasterKey::from_bytes(Secret(std::string(MasterKey::size, fill))).value();
}

class AuditLogTest : public ::testing::Test {
 protected:
  std::unique_ptr<AuditLog> open_log() {
    auto log = AuditLog::open(db_path(), key_);
    EXPECT_TRUE(log.has_value()) << log.error().message;
    return log ? std::move(*log) : nullptr;
  }
  [[nodiscard]] fs::path db_path() const { return dir_.path() / "credentials.db"; }

  // Appends `n` rows, one second apart; returns the log.
  std::unique_ptr<AuditLog> log_with(int n) {
    auto log = open_log();
    for (int i = 1; i <= n; ++i) {
      auto id =
          log->append(record(i * 1000, i * 1000 + 500, "user" + std::to_string(i) + "@x.com"));
      EXPECT_TRUE(id.has_value()) << id.error().message;
    }
    return log;
  }

  static VerifyReport verify(AuditLog& log) {
    auto report = log.verify();
    EXPECT_TRUE(report.has_value()) << report.error().message;
    return report.value_or(VerifyReport{});
  }

  test::TempDir dir_;
  MasterKey key_ = test_key();
  Secret chain_key_ = audit_chain_key(key_);
};

TEST(ConnectionOutcomeTest, NamesRoundTrip) {
  for (auto o :
       {ConnectionOutcome::ok, ConnectionOutcome::auth_failed, ConnectionOutcome::needs_reauth,
        ConnectionOutcome::upstream_unavailable, ConnectionOutcome::protocol_error,
        ConnectionOutcome::timeout, ConnectionOutcome::internal_error, ConnectionOutcome::shutdown,
        ConnectionOutcome::rejected}) {
    EXPECT_EQ(parse_connection_outcome(to_string(o)), o) << to_string(o);
  }
  EXPECT_EQ(to_string(ConnectionOutcome::upstream_unavailable), "upstream_unavailable");
  EXPECT_EQ(parse_connection_outcome("OK"), std::nullopt);
  for (auto s : {TokenSource::none, TokenSource::redis, TokenSource::database, TokenSource::refresh,
                 TokenSource::password, TokenSource::memory}) {
    EXPECT_EQ(parse_token_source(to_string(s)), s) << to_string(s);
  }
  EXPECT_EQ(to_string(TokenSource::none), "");
  EXPECT_EQ(parse_token_source("cache"), std::nullopt);
}

TEST(ConnectionRecordHashTest, CoversEveryFieldAndIsUnambiguous) {
  const Secret key = audit_chain_key(test_key());
  auto connection_record_hash = [&key](const ConnectionRecord& r) {
    return storage::connection_record_hash(r, key);
  };
  ConnectionRecord base = record(1000, 2000, "a@x.com");
  base.id = 7;
  base.prev_hash = audit_genesis_hash();
  const auto h = connection_record_hash(base);
  EXPECT_EQ(h.size(), 64u);
  EXPECT_EQ(h, connection_record_hash(base)) << "deterministic";
  EXPECT_NE(audit_genesis_hash(), h);
  EXPECT_EQ(audit_genesis_hash().size(), 64u);

  std::set<std::string> seen{h};
  auto changed = [&seen, &connection_record_hash](ConnectionRecord r) {
    EXPECT_TRUE(seen.insert(connection_record_hash(r)).second) << "a change left the hash alone";
  };
  auto r = base;
  r.id = 8;
  changed(r);
  r = base, r.started_at_ms += 1, changed(r);
  r = base, r.ended_at_ms += 1, changed(r);
  r = base, r.client_address = "::1", changed(r);
  r = base, r.client_port += 1, changed(r);
  r = base, r.listener = "starttls:127.0.0.1:1143", changed(r);
  r = base, r.username = "b@x.com", changed(r);
  r = base, r.account = "", changed(r);
  r = base, r.outcome = ConnectionOutcome::timeout, changed(r);
  r = base, r.token_source = TokenSource::refresh, changed(r);
  r = base, r.bytes_client_to_upstream += 1, changed(r);
  r = base, r.bytes_upstream_to_client += 1, changed(r);
  r = base, r.close_reason = "", changed(r);
  r = base, r.prev_hash = std::string(64, '0'), changed(r);
  r = base, r.messages = 1, changed(r);
  r = base, r.event = "refresh_ok", changed(r);
  // Moving bytes from one text field into the next must change the hash (length prefixes).
  r = base, r.username = "a@x.co", r.account = "ma@x.com", changed(r);
  // The stored hash itself is not an input.
  r = base, r.hash = "anything";
  EXPECT_EQ(connection_record_hash(r), h);
  // Keyed: another master key gives another MAC, and the plain v1 hash differs too.
  EXPECT_NE(storage::connection_record_hash(base, audit_chain_key(test_key('o'))), h);
  EXPECT_NE(legacy_connection_record_hash(base), h);
}

TEST_F(AuditLogTest, CreatesTheCurrentSchemaInAPrivateFile) {
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  RawDb raw(db_path());
  EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(current_schema_version()));
  EXPECT_EQ(raw.query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.query("SELECT count(*) FROM sqlite_master WHERE name = 'connection_log'"), "1");
  EXPECT_EQ(raw.query("SELECT count(*) FROM sqlite_master WHERE name = 'mail_credentials'"), "1");
  EXPECT_EQ(fs::status(db_path()).permissions() & (fs::perms::group_all | fs::perms::others_all),
            fs::perms::none);
}

TEST_F(AuditLogTest, AppendChainsRowsAndQueryReturnsThemOldestFirst) {
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  auto first = record(1000, 61'000, "alice@example.com");
  first.token_source = TokenSource::refresh;
  first.close_reason = "Session invalidated - AccessTokenExpired";
  first.id = 99;                 // ignored
  first.hash = "not-a-hash";     // ignored
  first.prev_hash = "whatever";  // ignored
  EXPECT_EQ(log->append(first).value(), 1);
  auto second = record(2000, 2500, "", ConnectionOutcome::auth_failed);
  second.client_address = "::1";
  second.client_port = 1;
  second.listener = "starttls:127.0.0.1:1143";
  EXPECT_EQ(log->append(second).value(), 2);
  EXPECT_EQ(log->append(record(3000, 3500, "bob@example.com")).value(), 3);

  auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].id, 1);
  EXPECT_EQ(rows[0].prev_hash, audit_genesis_hash());
  EXPECT_EQ(rows[0].hash, connection_record_hash(rows[0], chain_key_));
  EXPECT_EQ(rows[1].prev_hash, rows[0].hash);
  EXPECT_EQ(rows[2].prev_hash, rows[1].hash);
  EXPECT_EQ(rows[2].hash, connection_record_hash(rows[2], chain_key_));

  EXPECT_EQ(rows[0].started_at_ms, 1000);
  EXPECT_EQ(rows[0].ended_at_ms, 61'000);
  EXPECT_EQ(rows[0].account, "alice@example.com");
  EXPECT_EQ(rows[0].username, "alice@example.com");
  EXPECT_EQ(rows[0].token_source, TokenSource::refresh);
  EXPECT_EQ(rows[0].close_reason, "Session invalidated - AccessTokenExpired");
  EXPECT_EQ(rows[0].bytes_client_to_upstream, 100);
  EXPECT_EQ(rows[0].bytes_upstream_to_client, 2000);
  EXPECT_EQ(rows[1].outcome, ConnectionOutcome::auth_failed);
  EXPECT_EQ(rows[1].account, "");
  EXPECT_EQ(rows[1].token_source, TokenSource::none);
  EXPECT_EQ(rows[1].client_address, "::1");
  EXPECT_EQ(rows[1].client_port, 1);
  EXPECT_EQ(rows[1].listener, "starttls:127.0.0.1:1143");

  const auto report = verify(*log);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.rows, 3);
  EXPECT_EQ(report.head_hash, rows[2].hash);
}

TEST_F(AuditLogTest, QueryFilters) {
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  // id: started..ended, account
  ASSERT_TRUE(log->append(record(1000, 1500, "a@x.com")));  // 1
  ASSERT_TRUE(log->append(record(2000, 9000, "b@x.com")));  // 2: a long session
  ASSERT_TRUE(log->append(record(3000, 3500, "a@x.com")));  // 3
  ASSERT_TRUE(log->append(record(4000, 4500, "")));         // 4
  ASSERT_TRUE(log->append(record(5000, 5500, "a@x.com")));  // 5
  auto ids = [&log](const AuditQuery& q) {
    std::vector<std::int64_t> out;
    auto rows = log->query(q);
    EXPECT_TRUE(rows.has_value()) << rows.error().message;
    for (const auto& r : rows.value_or(std::vector<ConnectionRecord>{})) {
      out.push_back(r.id);
    }
    return out;
  };
  using V = std::vector<std::int64_t>;
  EXPECT_EQ(ids(AuditQuery{}), (V{1, 2, 3, 4, 5}));
  // Open at some time at or after 3500: ended_at_ms >= 3500.
  EXPECT_EQ(ids(make_query(3500, {})), (V{2, 3, 4, 5}));
  // Started before 3000.
  EXPECT_EQ(ids(make_query({}, 3000)), (V{1, 2}));
  // Open during [4000, 5000): the long session 2 and row 4.
  EXPECT_EQ(ids(make_query(4000, 5000)), (V{2, 4}));
  EXPECT_EQ(ids(make_query({}, {}, "a@x.com")), (V{1, 3, 5}));
  EXPECT_EQ(ids(make_query({}, {}, "nobody@x.com")), V{});
  EXPECT_EQ(ids(make_query(2000, {}, "a@x.com")), (V{3, 5}));
  // LIMIT keeps the newest rows, still oldest first.
  EXPECT_EQ(ids(make_query({}, {}, std::nullopt, 2)), (V{4, 5}));
  EXPECT_EQ(ids(make_query({}, {}, "a@x.com", 2)), (V{3, 5}));
  EXPECT_EQ(ids(make_query({}, {}, std::nullopt, 0)), (V{1, 2, 3, 4, 5}));
}

TEST_F(AuditLogTest, LongTextIsCutWithoutSplittingUtf8) {
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  auto r = record(1, 2, "a@x.com");
  // 1023 ASCII bytes then a 2-byte character: cutting at 1024 would split it.
  r.listener = std::string(max_audit_text_bytes - 1, 'u') + "\xc3\xa9" + std::string(100, 'v');
  r.close_reason = std::string(5000, 'r');
  ASSERT_TRUE(log->append(r));
  const auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].listener,
            std::string(max_audit_text_bytes - 1, 'u') + "\xe2\x80\xa6(+102 bytes)");
  EXPECT_EQ(rows[0].close_reason,
            std::string(max_audit_text_bytes, 'r') + "\xe2\x80\xa6(+3976 bytes)");
  EXPECT_TRUE(verify(*log).intact);
}

TEST_F(AuditLogTest, PeerSuppliedTextIsSanitizedBeforeItIsStored) {
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  auto r = record(1, 2, "");
  r.username = "bob\r\n2025-06-01 INFO forged";
  r.close_reason = "upstream BYE: going away\nINFO forged\x1b[31m";
  ASSERT_TRUE(log->append(r));
  const auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].username, "<not an email, 27 bytes>");  // not an email: only its length
  EXPECT_EQ(rows[0].close_reason, "upstream BYE: going away\\nINFO forged\\x1b[31m");
  EXPECT_TRUE(verify(*log).intact);
}

TEST_F(AuditLogTest, EmptyLogVerifies) {
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  const auto report = verify(*log);
  EXPECT_TRUE(report.intact);
  EXPECT_EQ(report.rows, 0);
  EXPECT_EQ(report.head_hash, audit_genesis_hash());
}

TEST_F(AuditLogTest, ReopenContinuesTheChain) {
  { log_with(3); }
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->append(record(9000, 9500, "z@x.com")).value(), 4);
  const auto report = verify(*log);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.rows, 4);
}

TEST_F(AuditLogTest, TriggersRefusePlainUpdatesAndDeletes) {
  auto log = log_with(2);
  RawDb raw(db_path());
  EXPECT_NE(
      raw.try_exec("UPDATE connection_log SET username = 'x' WHERE id = 1").find("append-only"),
      std::string::npos);
  EXPECT_NE(raw.try_exec("DELETE FROM connection_log WHERE id = 2").find("append-only"),
            std::string::npos);
  EXPECT_TRUE(verify(*log).intact);
}

TEST_F(AuditLogTest, EditedRowIsDetectedAtThatRow) {
  auto log = log_with(5);
  RawDb(db_path()).tamper("UPDATE connection_log SET bytes_upstream_to_client = 1 WHERE id = 3");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 3);
  EXPECT_EQ(report.rows, 5);
  EXPECT_NE(report.reason.find("edited"), std::string::npos) << report.reason;
}

TEST_F(AuditLogTest, EditedTextAndOutcomeAreDetected) {
  auto log = log_with(4);
  RawDb(db_path()).tamper("UPDATE connection_log SET account = 'mallory@x.com' WHERE id = 2");
  EXPECT_EQ(verify(*log).broken_at, 2);

  test::TempDir other_dir_guard;  // a second, separate log
  auto log2 = AuditLog::open(other_dir_guard.path() / "db", key_).value();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(log2->append(record(i, i + 1, "a@x.com")));
  }
  RawDb(other_dir_guard.path() / "db")
      .tamper("UPDATE connection_log SET outcome = 'auth_failed' WHERE id = 1");
  const auto report = verify(*log2);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 1);
}

TEST_F(AuditLogTest, MessageCountIsStoredAndCoveredByTheHash) {
  auto log = open_log();
  auto imap = record(0, 1, "a@x.com");
  auto smtp = record(1, 2, "a@x.com");
  smtp.listener = "submissions:127.0.0.1:1465";
  smtp.messages = 3;
  ASSERT_TRUE(log->append(imap));
  ASSERT_TRUE(log->append(smtp));
  const auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].messages, 0);
  EXPECT_EQ(rows[1].messages, 3);
  EXPECT_TRUE(verify(*log).intact);
  // Raising it, or setting it to 0, both break the row.
  RawDb(db_path()).tamper("UPDATE connection_log SET messages = 4 WHERE id = 2");
  EXPECT_EQ(verify(*log).broken_at, 2);
  RawDb(db_path()).tamper("UPDATE connection_log SET messages = 0 WHERE id = 2");
  EXPECT_EQ(verify(*log).broken_at, 2);
  RawDb(db_path()).tamper("UPDATE connection_log SET messages = 1 WHERE id = 1");
  EXPECT_EQ(verify(*log).broken_at, 1);
}

TEST_F(AuditLogTest, EditedHashColumnIsDetected) {
  auto log = log_with(3);
  RawDb(db_path()).tamper("UPDATE connection_log SET hash = '" + std::string(64, 'a') +
                          "' WHERE id = 3");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 3);
}

TEST_F(AuditLogTest, EditedAndRehashedRowBreaksTheNextLink) {
  auto log = log_with(4);
  auto rows = log->query({}).value();
  auto forged = rows[1];  // id 2
  forged.account = "someone-else@x.com";
  // Even with the key (an insider): the next row's prev_hash still names the old hash.
  const auto new_hash = connection_record_hash(forged, chain_key_);
  RawDb(db_path()).tamper("UPDATE connection_log SET account = 'someone-else@x.com', hash = '" +
                          new_hash + "' WHERE id = 2");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 3);
  EXPECT_NE(report.reason.find("prev_hash"), std::string::npos) << report.reason;
}

TEST_F(AuditLogTest, DeletedMiddleRowIsDetected) {
  auto log = log_with(5);
  RawDb(db_path()).tamper("DELETE FROM connection_log WHERE id = 3");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 3);
  EXPECT_EQ(report.rows, 4);
  EXPECT_NE(report.reason.find("row 3 is missing"), std::string::npos) << report.reason;
}

TEST_F(AuditLogTest, DeletedFirstRowIsDetected) {
  auto log = log_with(3);
  RawDb(db_path()).tamper("DELETE FROM connection_log WHERE id = 1");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 1);
}

TEST_F(AuditLogTest, DeletedLastRowIsDetectedThroughTheHead) {
  auto log = log_with(5);
  RawDb(db_path()).tamper("DELETE FROM connection_log WHERE id = 5");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 5);
  EXPECT_NE(report.reason.find("deleted at the end"), std::string::npos) << report.reason;
}

TEST_F(AuditLogTest, DeletedLastRowsStayDetectedAfterLaterAppends) {
  auto log = log_with(5);
  RawDb(db_path()).tamper("DELETE FROM connection_log WHERE id >= 4");
  // The next append chains from the head (row 5), not from the table's last row.
  EXPECT_EQ(log->append(record(9000, 9001, "a@x.com")).value(), 6);
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 4);
  EXPECT_NE(report.reason.find("rows 4 to 5 are missing"), std::string::npos) << report.reason;
}

TEST_F(AuditLogTest, ReorderedRowsAreDetected) {
  auto log = log_with(5);
  // Swap rows 2 and 3 (their ids), keeping every row's own columns.
  RawDb(db_path()).tamper(
      "UPDATE connection_log SET id = -2 WHERE id = 2;"
      "UPDATE connection_log SET id = 2 WHERE id = 3;"
      "UPDATE connection_log SET id = 3 WHERE id = -2;");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 2);
}

TEST_F(AuditLogTest, RowInsertedOutsideTheLogIsDetected) {
  auto log = log_with(3);
  auto rows = log->query({}).value();
  // A well-formed row 4, chained and hashed correctly, but the head is not moved.
  auto forged = record(9000, 9500, "a@x.com");
  forged.id = 4;
  forged.prev_hash = rows[2].hash;
  forged.hash = connection_record_hash(forged, chain_key_);
  RawDb(db_path()).exec(
      "INSERT INTO connection_log VALUES (4, 9000, 9500, '127.0.0.1', 50000, "
      "'tls:127.0.0.1:1993', 'a@x.com', 'a@x.com', 'ok', 'redis', 100, 2000, 'client closed', '" +
      forged.prev_hash + "', '" + forged.hash + "', 0, '')");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 4);
  EXPECT_NE(report.reason.find("outside"), std::string::npos) << report.reason;
  // Appending refuses to overwrite or fork: the next id is taken.
  EXPECT_FALSE(log->append(record(9600, 9700, "a@x.com")).has_value());
}

TEST_F(AuditLogTest, DeletedOrEditedHeadIsDetectedAndAppendRefuses) {
  auto log = log_with(3);
  RawDb raw(db_path());
  raw.exec("UPDATE meta SET value = 'garbage' WHERE key = 'connection_log_head'");
  auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_NE(report.reason.find("malformed"), std::string::npos) << report.reason;
  EXPECT_FALSE(log->append(record(1, 2, "a@x.com")).has_value());

  raw.exec("DELETE FROM meta WHERE key = 'connection_log_head'");
  report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_NE(report.reason.find("missing"), std::string::npos) << report.reason;
  auto appended = log->append(record(1, 2, "a@x.com"));
  ASSERT_FALSE(appended.has_value());
  EXPECT_NE(appended.error().message.find("no head"), std::string::npos);
}

TEST_F(AuditLogTest, UnknownOutcomeFailsQueryAndVerify) {
  auto log = log_with(2);
  RawDb(db_path()).tamper("UPDATE connection_log SET outcome = 'fine' WHERE id = 2");
  auto rows = log->query({});
  ASSERT_FALSE(rows.has_value());
  EXPECT_EQ(rows.error().code, Errc::credentials_corrupt);
  EXPECT_NE(rows.error().message.find("row 2"), std::string::npos);
  EXPECT_EQ(verify(*log).broken_at, 2);
}

// Write access without the master key: a consistent rewrite of every row and the head under
// another key does not verify (issue #8: the chain is keyed).
TEST_F(AuditLogTest, RewritingTheWholeChainWithoutTheKeyIsDetected) {
  auto log = log_with(3);
  auto rows = log->query({}).value();
  const Secret wrong = audit_chain_key(test_key('w'));
  RawDb raw(db_path());
  std::string prev = audit_genesis_hash();
  for (auto& r : rows) {
    r.account = "rewritten@x.com";
    r.prev_hash = prev;
    r.hash = connection_record_hash(r, wrong);
    raw.tamper("UPDATE connection_log SET account = 'rewritten@x.com', prev_hash = '" + prev +
               "', hash = '" + r.hash + "' WHERE id = " + std::to_string(r.id));
    prev = r.hash;
  }
  // A head with a MAC under the wrong key, then one with none at all.
  raw.exec("UPDATE meta SET value = '3 " + prev + " " + std::string(64, 'a') +
           "' WHERE key = 'connection_log_head'");
  auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_NE(report.reason.find("does not verify"), std::string::npos) << report.reason;
  EXPECT_FALSE(log->append(record(1, 2, "a@x.com")).has_value()) << "chained onto a forged head";
  raw.exec("UPDATE meta SET value = '3 " + prev + "' WHERE key = 'connection_log_head'");
  report = verify(*log);
  EXPECT_FALSE(report.intact);
}

// A keyed log edited without the key to look like a log from before keying (plain hashes, a head
// without MAC, no boundary): the sealed key check says this file was keyed, so opening it again
// keys nothing and verify reports the forgery (a review found the opposite in an earlier draft).
TEST_F(AuditLogTest, AnUnkeyedForgeryIsNeverKeyed) {
  auto log = log_with(3);
  auto rows = log->query({}).value();
  RawDb raw(db_path());
  std::string prev = audit_genesis_hash();
  for (auto& r : rows) {
    r.account = "forged@x.com";
    r.prev_hash = prev;
    r.hash = legacy_connection_record_hash(r);
    raw.tamper("UPDATE connection_log SET account = 'forged@x.com', prev_hash = '" + prev +
               "', hash = '" + r.hash + "' WHERE id = " + std::to_string(r.id));
    prev = r.hash;
  }
  raw.exec("UPDATE meta SET value = '3 " + prev + "' WHERE key = 'connection_log_head'");
  raw.exec("DELETE FROM meta WHERE key IN ('connection_log_keyed_from', 'connection_log_base')");
  EXPECT_FALSE(verify(*log).intact) << "an open log is not fooled";
  log.reset();
  log = open_log();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->query({}).value().size(), 3u) << "nothing was keyed";
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_NE(report.reason.find("has no MAC"), std::string::npos) << report.reason;
  EXPECT_FALSE(log->append(record(1, 2, "a@x.com")).has_value());
  // Deleting the key check as well does not reopen the door: verifying read-only finds nothing
  // that vouches for the rows (a review found it did), and a writer treats the file as new.
  raw.exec("DELETE FROM meta WHERE key = 'key_check'");
  {
    auto verifier = AuditLog::open_for_verifying(db_path(), key_).value();
    const auto unvouched = verifier->verify().value();
    EXPECT_FALSE(unvouched.intact);
    EXPECT_NE(unvouched.reason.find("key check is missing"), std::string::npos) << unvouched.reason;
  }
  log.reset();
  log = open_log();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->query({}).value().size(), 3u);
  EXPECT_FALSE(verify(*log).intact);
}

TEST_F(AuditLogTest, ConcurrentAppendsFromThreadsAndConnectionsKeepTheChain) {
  auto shared = open_log();
  auto second = open_log();  // another connection to the same file, as another process would
  ASSERT_NE(shared, nullptr);
  ASSERT_NE(second, nullptr);
  constexpr int threads = 4;
  constexpr int per_thread = 40;
  std::vector<std::thread> workers;
  std::vector<std::vector<std::int64_t>> ids(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      AuditLog& log = t % 2 == 0 ? *shared : *second;
      for (int i = 0; i < per_thread; ++i) {
        auto id =
            log.append(record(t * 1000 + i, t * 1000 + i + 1, "t" + std::to_string(t) + "@x.com"));
        if (id) {
          ids[t].push_back(*id);
        } else {
          ADD_FAILURE() << id.error().message;
        }
      }
    });
  }
  for (auto& w : workers) {
    w.join();
  }
  std::set<std::int64_t> all;
  for (const auto& v : ids) {
    all.insert(v.begin(), v.end());
  }
  ASSERT_EQ(all.size(), static_cast<std::size_t>(threads * per_thread));
  EXPECT_EQ(*all.begin(), 1);
  EXPECT_EQ(*all.rbegin(), threads * per_thread);
  const auto report = verify(*shared);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.rows, threads * per_thread);
}

// The v1 schema exactly as released (credentials store, user_version 1): the migration must
// take such a file forward without touching its credentials.
constexpr const char* v1_schema = R"sql(
CREATE TABLE mail_credentials (
  email TEXT PRIMARY KEY,
  use_oauth INTEGER NOT NULL,
  access_token BLOB,
  refresh_token BLOB,
  token_expiry INTEGER NOT NULL DEFAULT 0,
  refreshed_at_ms INTEGER NOT NULL DEFAULT 0,
  password BLOB,
  local_password_hash TEXT,
  upstream_host TEXT,
  upstream_port INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth')),
  status_reason TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value BLOB
);
PRAGMA user_version = 1;
PRAGMA journal_mode = WAL;
)sql";

TEST_F(AuditLogTest, MigratesAVersion1DatabaseAndKeepsItsCredentials) {
  auto key = MasterKey::from_bytes(Secret(std::string(MasterKey::size, 'k'))).value();
  {
    // What a v1 CredentialsStore wrote: the key check and one account, sealed with the
    // associated data layouts of v1 ("meta:key_check"; email NUL column).
    RawDb raw(db_path());
    raw.exec(v1_schema);
    raw.exec_with_blobs("INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                        {seal(key, Secret(std::string("imap-oauth2-proxy master key check v1")),
                              "meta:key_check")});
    raw.exec_with_blobs(
        "INSERT INTO mail_credentials (email, use_oauth, access_token, refresh_token, "
        "token_expiry, refreshed_at_ms, local_password_hash, created_at, updated_at) "
        "VALUES ('old@x.com', 1, ?1, ?2, 1700000000, 5, 'hash', 1, 1)",
        {seal(key, Secret(std::string("at-old")), std::string("old@x.com\0access_token", 22)),
         seal(key, Secret(std::string("rt-old")), std::string("old@x.com\0refresh_token", 23))});
    EXPECT_EQ(raw.query("PRAGMA user_version"), "1");
  }
  {
    auto log = open_log();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->append(record(1, 2, "old@x.com")));
    EXPECT_TRUE(verify(*log).intact);
  }
  RawDb raw(db_path());
  EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(current_schema_version()));
  EXPECT_EQ(raw.query("SELECT count(*) FROM connection_log"), "1");

  auto store = CredentialsStore::open(db_path(), std::move(key));
  ASSERT_TRUE(store.has_value()) << store.error().message;
  auto row = (*store)->get("old@x.com");
  ASSERT_TRUE(row.has_value()) << row.error().message;
  EXPECT_EQ(row->refresh_token.reveal(), "rt-old");
  EXPECT_EQ(row->access_token.reveal(), "at-old");
  EXPECT_EQ(row->local_password_hash, "hash");
  EXPECT_EQ(row->token_expiry, 1'700'000'000);
  // Accounts from before provider profiles (v3) use the default one ([oauth] + [upstream]).
  EXPECT_EQ(row->provider, "default");
  EXPECT_TRUE(row->tenant.empty());
  EXPECT_TRUE(row->client_id.empty());
  EXPECT_TRUE(row->client_secret.empty());
}

TEST_F(AuditLogTest, SharesTheFileWithTheCredentialsStore) {
  auto key = MasterKey::from_bytes(Secret(std::string(MasterKey::size, 'k'))).value();
  auto store = CredentialsStore::open(db_path(), std::move(key));
  ASSERT_TRUE(store.has_value()) << store.error().message;
  auto log = open_log();
  ASSERT_NE(log, nullptr);
  Credentials c;
  c.email = "a@x.com";
  c.refresh_token = Secret(std::string("rt"));
  ASSERT_TRUE((*store)->upsert_account(c));
  ASSERT_TRUE(log->append(record(1, 2, "a@x.com")));
  EXPECT_EQ((*store)->list().value().size(), 1u);
  EXPECT_TRUE(verify(*log).intact);
}

TEST_F(AuditLogTest, NewerSchemaIsRefused) {
  ASSERT_NE(open_log(), nullptr);
  RawDb(db_path()).exec("PRAGMA user_version = " + std::to_string(current_schema_version() + 1));
  auto log = AuditLog::open(db_path(), key_);
  ASSERT_FALSE(log.has_value());
  EXPECT_NE(log.error().message.find("newer"), std::string::npos);
}

TEST_F(AuditLogTest, UsernamesThatAreNotAnAccountAreKeptOnlyWhenTheyAreEmails) {
  auto log = open_log();
  auto typed_password = record(1, 2, "");
  typed_password.username = "hunter2-my-password";
  auto unknown_email = record(2, 3, "");
  unknown_email.username = "Nobody@Example.com";
  auto account = record(3, 4, "a@x.com");
  account.username = "A@X.com";
  ASSERT_TRUE(log->append_batch(std::vector{typed_password, unknown_email, account}));
  const auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].username, "<not an email, 19 bytes>");
  EXPECT_EQ(rows[1].username, "Nobody@Example.com");
  EXPECT_EQ(rows[2].username, "A@X.com");
  EXPECT_TRUE(verify(*log).intact);
}

TEST_F(AuditLogTest, EventsAreRowsOfTheSameChainAndFilterable) {
  auto log = open_log();
  auto from_a = record(1000, 1500, "a@x.com");
  auto failed = record(2000, 2500, "b@x.com", ConnectionOutcome::auth_failed);
  failed.client_address = "10.0.0.9";
  ASSERT_TRUE(log->append(from_a));
  ASSERT_TRUE(log->append(event_record(AuditEvent::refresh_ok, "a@x.com", "refresh token", 1600)));
  ASSERT_TRUE(log->append(failed));
  ASSERT_TRUE(log->append(event_record(AuditEvent::needs_reauth, "b@x.com",
                                       "permanent invalid_grant AADSTS70008", 2600)));
  const auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[1].event, "refresh_ok");
  EXPECT_EQ(rows[3].event, "needs_reauth");
  EXPECT_EQ(rows[3].outcome, ConnectionOutcome::needs_reauth);
  EXPECT_EQ(rows[3].close_reason, "permanent invalid_grant AADSTS70008");
  EXPECT_TRUE(verify(*log).intact);

  auto ids = [&log](AuditQuery q) {
    std::vector<std::int64_t> out;
    const auto found = log->query(q).value();  // named: a range-for over .value() of a temporary
    for (const auto& r : found) {              // would dangle
      out.push_back(r.id);
    }
    return out;
  };
  using V = std::vector<std::int64_t>;
  AuditQuery q;
  q.event = "needs_reauth";
  EXPECT_EQ(ids(q), V{4});
  q.event = "connection";
  EXPECT_EQ(ids(q), (V{1, 3}));
  q = {};
  q.outcome = ConnectionOutcome::auth_failed;
  EXPECT_EQ(ids(q), V{3});
  q = {};
  q.client_address = "10.0.0.9";
  EXPECT_EQ(ids(q), V{3});
  q = {};
  q.after_id = 2;
  EXPECT_EQ(ids(q), (V{3, 4}));

  // The event name is covered by the MAC.
  RawDb(db_path()).tamper("UPDATE connection_log SET event = 'refresh_failed' WHERE id = 2");
  EXPECT_EQ(verify(*log).broken_at, 2);
}

TEST_F(AuditLogTest, AppendBatchIsOneTransaction) {
  auto log = log_with(2);
  std::vector<ConnectionRecord> batch;
  for (int i = 0; i < 50; ++i) {
    batch.push_back(record(10'000 + i, 10'001 + i, "b@x.com"));
  }
  EXPECT_EQ(log->append_batch(batch).value(), 52);
  EXPECT_EQ(log->append_batch({}).value(), 0);
  EXPECT_TRUE(verify(*log).intact);
  // A head that does not verify refuses the whole batch: no row of it is written.
  RawDb raw(db_path());
  const std::string head = raw.query("SELECT value FROM meta WHERE key = 'connection_log_head'");
  raw.exec("UPDATE meta SET value = '52 " + std::string(64, 'b') + " " + std::string(64, 'c') +
           "' WHERE key = 'connection_log_head'");
  EXPECT_FALSE(log->append_batch(batch).has_value());
  EXPECT_EQ(raw.query("SELECT count(*) FROM connection_log"), "52");
}

TEST_F(AuditLogTest, ReadingNeedsNoKeyButWritingAndVerifyingDo) {
  { log_with(2); }
  auto reader = AuditLog::open_for_reading(db_path()).value();
  EXPECT_EQ(reader->query({}).value().size(), 2u);
  auto appended = reader->append(record(1, 2, "a@x.com"));
  ASSERT_FALSE(appended.has_value());
  EXPECT_EQ(appended.error().code, Errc::key_error);
  EXPECT_NE(appended.error().message.find("key_file"), std::string::npos);
  EXPECT_FALSE(reader->verify().has_value());
  // Another master key is refused at open, by the file's sealed key check.
  auto check_refused = [](const Result<std::unique_ptr<AuditLog>>& other) {
    ASSERT_FALSE(other.has_value());
    EXPECT_EQ(other.error().code, Errc::key_error);
    EXPECT_NE(other.error().message.find("does not match"), std::string::npos);
  };
  check_refused(AuditLog::open(db_path(), test_key('o')));
  check_refused(AuditLog::open_for_verifying(db_path(), test_key('o')));
}

TEST_F(AuditLogTest, TheAnchorCatchesACutTailWithAReplayedHead) {
  auto log = log_with(3);
  const auto at3 = verify(*log);
  const std::string head3 =
      RawDb(db_path()).query("SELECT value FROM meta WHERE key = 'connection_log_head'");
  ASSERT_TRUE(log->append(record(9000, 9001, "a@x.com")));
  ASSERT_TRUE(log->append(record(9002, 9003, "a@x.com")));
  const auto at5 = verify(*log);
  ASSERT_TRUE(at5.intact);
  EXPECT_EQ(at5.head_id, 5);
  const AuditAnchor anchor5{at5.head_id, at5.head_hash};
  EXPECT_TRUE(log->verify(anchor5).value().intact);
  EXPECT_TRUE(log->verify(AuditAnchor{3, at3.head_hash}).value().intact) << "an older anchor";
  EXPECT_FALSE(log->verify(AuditAnchor{3, std::string(64, '0')}).value().intact);

  // Cut rows 4 and 5 and put back the head saved at row 3: its MAC is genuine, so only the
  // anchor shows the cut.
  RawDb raw(db_path());
  raw.tamper("DELETE FROM connection_log WHERE id > 3");
  raw.exec("UPDATE meta SET value = '" + head3 + "' WHERE key = 'connection_log_head'");
  EXPECT_TRUE(verify(*log).intact);
  const auto report = log->verify(anchor5).value();
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 4);
  EXPECT_NE(report.reason.find("cut off"), std::string::npos) << report.reason;

  EXPECT_EQ(parse_audit_anchor("5:" + at5.head_hash)->id, 5);
  EXPECT_FALSE(parse_audit_anchor("5:abc"));
  EXPECT_FALSE(parse_audit_anchor("0:" + at5.head_hash));
  EXPECT_FALSE(parse_audit_anchor(at5.head_hash));
}

TEST_F(AuditLogTest, RetentionDeletesAPrefixAndTheRestStillVerifies) {
  auto log = open_log();
  // Rows 1-3 end at 1..3 s, row 4 at 100 s, row 5 at 2 s (a long session logged late).
  for (std::int64_t end : {1000, 2000, 3000, 100'000, 2000}) {
    ASSERT_TRUE(log->append(record(end - 500, end, "a@x.com")));
  }
  const auto before = verify(*log);
  auto pruned = log->prune(50'000, 200'000).value();
  EXPECT_EQ(pruned.deleted, 3);  // 1-3; row 5 is old but after the newer row 4: kept
  EXPECT_EQ(pruned.first_kept, 4);
  const auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].id, 4);
  EXPECT_EQ(rows[2].event, "retention");
  EXPECT_NE(rows[2].close_reason.find("deleted rows 1 to 3"), std::string::npos);
  auto report = verify(*log);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.first_id, 4);
  EXPECT_EQ(report.head_id, 6);
  // An anchor from before still checks when it is the last deleted row (the base) or later.
  EXPECT_TRUE(log->verify(AuditAnchor{before.head_id, before.head_hash}).value().intact);
  const auto unverifiable = log->verify(AuditAnchor{2, std::string(64, '0')});
  ASSERT_FALSE(unverifiable.has_value()) << "not a finding about the log";
  EXPECT_NE(unverifiable.error().message.find("deleted by retention"), std::string::npos)
      << unverifiable.error().message;
  // Nothing old enough: nothing happens.
  EXPECT_EQ(log->prune(0, 200'000).value().deleted, 0);
  // Deleting one more row at the start is caught (the base is MAC'd), and so is moving the base.
  RawDb raw(db_path());
  raw.tamper("DELETE FROM connection_log WHERE id = 4");
  report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 4);
  raw.exec("UPDATE meta SET value = '4 " + rows[0].hash + " " + std::string(64, 'd') +
           "' WHERE key = 'connection_log_base'");
  EXPECT_FALSE(verify(*log).intact);
  // A chain that does not verify is not pruned.
  auto refused = log->prune(std::numeric_limits<std::int64_t>::max(), 300'000);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message.find("does not verify"), std::string::npos);
}

TEST_F(AuditLogTest, RetentionDeletesALongPrefixInChunksEachWithItsOwnEvent) {
  auto log = open_log();
  for (std::int64_t end = 1000; end <= 10'000; end += 1000) {
    ASSERT_TRUE(log->append(record(end - 500, end, "a@x.com")));
  }
  ASSERT_TRUE(log->append(record(99'000, 100'000, "a@x.com")));
  const auto pruned = log->prune(50'000, 200'000, 3).value();
  EXPECT_EQ(pruned.deleted, 10);
  EXPECT_EQ(pruned.first_kept, 11);
  const auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 5u);  // row 11 and one event a chunk
  EXPECT_EQ(rows[0].id, 11);
  const std::vector<std::string> ranges{"1 to 3", "4 to 6", "7 to 9", "10 to 10"};
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(rows[i + 1].event, "retention");
    EXPECT_NE(rows[i + 1].close_reason.find("deleted rows " + ranges[i]), std::string::npos)
        << rows[i + 1].close_reason;
  }
  const auto report = verify(*log);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.first_id, 11);
}

TEST_F(AuditLogTest, ALogFromBeforeKeyingIsKeyedOnceAndStaysVerifiable) {
  {
    // A schema v5 log as the previous version wrote it: plain SHA-256 rows, a head without MAC.
    RawDb raw(db_path());
    ASSERT_TRUE(AuditLog::open_for_reading(db_path()));  // creates the current schema
    std::string prev = audit_genesis_hash();
    for (int id = 1; id <= 3; ++id) {
      auto r = record(id * 1000, id * 1000 + 1, "old@x.com");
      r.id = id;
      r.prev_hash = prev;
      r.hash = legacy_connection_record_hash(r);
      raw.exec(
          "INSERT INTO connection_log (id, started_at_ms, ended_at_ms, client_address, "
          "client_port, listener, username, account, outcome, token_source, "
          "bytes_client_to_upstream, bytes_upstream_to_client, close_reason, prev_hash, hash) "
          "VALUES (" +
          std::to_string(id) + ", " + std::to_string(r.started_at_ms) + ", " +
          std::to_string(r.ended_at_ms) +
          ", '127.0.0.1', 50000, 'tls:127.0.0.1:1993', 'old@x.com', 'old@x.com', 'ok', "
          "'redis', 100, 2000, 'client closed', '" +
          prev + "', '" + r.hash + "')");
      prev = r.hash;
    }
    raw.exec("INSERT INTO meta (key, value) VALUES ('connection_log_head', '3 " + prev + "')");
    // Its key check, as the store of that version wrote it (v2: account rows have MACs).
    raw.exec_with_blobs("INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                        {seal(key_, Secret(std::string("imap-oauth2-proxy master key check v2")),
                              "meta:key_check")});
  }
  {
    // Verifying first writes nothing: the plain chain is checked as it is.
    auto verifier = AuditLog::open_for_verifying(db_path(), key_).value();
    const auto report = verifier->verify().value();
    EXPECT_TRUE(report.intact) << report.reason;
    EXPECT_EQ(report.unkeyed_rows, 3);
    EXPECT_EQ(RawDb(db_path()).query("SELECT count(*) FROM connection_log"), "3");
  }
  auto log = open_log();
  auto rows = log->query({}).value();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[3].event, "chain_keyed");
  EXPECT_NE(rows[3].close_reason.find("plain SHA-256 chain intact"), std::string::npos)
      << rows[3].close_reason;
  ASSERT_TRUE(log->append(record(5000, 5001, "new@x.com")));
  EXPECT_TRUE(verify(*log).intact);
  // Opening again keys nothing more.
  log.reset();
  log = open_log();
  EXPECT_EQ(log->query({}).value().size(), 5u);
  EXPECT_TRUE(verify(*log).intact);
  // The unkeyed rows stay protected: the first keyed row's MAC covers their last hash.
  RawDb raw(db_path());
  raw.tamper("UPDATE connection_log SET account = 'x@x.com' WHERE id = 2");
  EXPECT_EQ(verify(*log).broken_at, 2);
  raw.tamper("UPDATE connection_log SET account = 'old@x.com' WHERE id = 2");
  EXPECT_TRUE(verify(*log).intact);
  // Once keyed, a plain head is never keyed again (the key check moved to v3 with the keying).
  {
    const auto head = raw.query("SELECT value FROM meta WHERE key = 'connection_log_head'");
    raw.exec("UPDATE meta SET value = substr(value, 1, 67) WHERE key = 'connection_log_head'");
    log.reset();
    log = open_log();
    EXPECT_EQ(log->query({}).value().size(), 5u);
    EXPECT_FALSE(verify(*log).intact);
    raw.exec("UPDATE meta SET value = '" + head + "' WHERE key = 'connection_log_head'");
    EXPECT_TRUE(verify(*log).intact);
  }
  // Moving the boundary (to pass keyed rows off as plain ones) breaks its MAC.
  raw.exec(
      "UPDATE meta SET value = '6' || substr(value, 2) WHERE key = "
      "'connection_log_keyed_from'");
  EXPECT_FALSE(verify(*log).intact);
}

TEST_F(AuditLogTest, SummaryMatchesTheRows) {
  auto log = open_log();
  auto a1 = record(1000, 1500, "a@x.com");
  auto a2 = record(2000, 2500, "a@x.com", ConnectionOutcome::upstream_unavailable);
  a2.client_address = "10.0.0.2";
  auto b1 = record(3000, 3500, "b@x.com");
  auto nobody = record(4000, 4500, "", ConnectionOutcome::auth_failed);
  ASSERT_TRUE(log->append_batch(std::vector{a1, a2, b1, nobody}));
  ASSERT_TRUE(log->append(event_record(AuditEvent::refresh_ok, "a@x.com", "", 2200)));
  // An account whose authorization broke and that had no traffic still shows.
  ASSERT_TRUE(log->append(event_record(AuditEvent::needs_reauth, "c@x.com", "AADSTS700082", 4600)));
  ASSERT_TRUE(
      log->append(event_record(AuditEvent::retention, "", "", 4700)));  // no line of its own
  const auto all = log->summarize(std::nullopt).value();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].account, "a@x.com");
  EXPECT_EQ(all[0].connections, 2);
  EXPECT_EQ(all[0].failures, 1);
  EXPECT_EQ(all[0].bytes_client_to_upstream, 200);
  EXPECT_EQ(all[0].bytes_upstream_to_client, 4000);
  EXPECT_EQ(all[0].distinct_clients, 2);
  EXPECT_EQ(all[0].last_seen_ms, 2500);
  EXPECT_EQ(all[0].last_refresh_ms, 2200);
  EXPECT_EQ(all[0].status, "removed");  // no mail_credentials row
  EXPECT_EQ(all[1].account, "b@x.com");
  EXPECT_EQ(all[1].last_refresh_ms, 0);
  EXPECT_EQ(all[2].account, "c@x.com");
  EXPECT_EQ(all[2].connections, 0);
  EXPECT_EQ(all[3].account, "");  // logins that matched no account come last
  EXPECT_EQ(all[3].failures, 1);
  const auto recent = log->summarize(3000).value();
  ASSERT_EQ(recent.size(), 3u);
  EXPECT_EQ(recent[0].account, "b@x.com");
}

}  // namespace
}  // namespace iop::storage
