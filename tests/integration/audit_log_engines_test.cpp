// The connection log on both engines (issue #10): each test runs on SQLite and on a real
// PostgreSQL. The SQLite-only cases (keying a log from before keying, the file's permissions)
// stay in tests/unit/storage/audit_log_test.cpp.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "storage/audit_log.hpp"
#include "storage/credentials_store.hpp"
#include "tests/support/process.hpp"
#include "tests/support/test_database.hpp"

namespace iop::storage {
namespace {

ConnectionRecord connection(std::int64_t ended_ms, std::string account, std::string reason) {
  ConnectionRecord r;
  r.started_at_ms = ended_ms - 500;
  r.ended_at_ms = ended_ms;
  r.client_address = "127.0.0.1";
  r.client_port = 40'000;
  r.listener = "tls:127.0.0.1:1993";
  r.username = account;
  r.account = std::move(account);
  r.token_source = TokenSource::redis;
  r.bytes_client_to_upstream = 100;
  r.bytes_upstream_to_client = 2000;
  r.close_reason = std::move(reason);
  return r;
}

class AuditLogEngineTest : public ::testing::TestWithParam<test::Engine> {
 protected:
  void SetUp() override {
    if (auto why = test::engine_unavailable(GetParam())) {
      GTEST_SKIP() << *why;
    }
    db_.emplace(GetParam(), dir_.path());
    // The store first, as serve opens them: it writes the key check.
    store_ = db_->open_store(key_).value();
  }

  [[nodiscard]] bool postgres() const { return GetParam() == test::Engine::postgresql; }

  std::unique_ptr<AuditLog> open_log() {
    auto log = AuditLog::open(db_->database(), db_->password(), key_);
    EXPECT_TRUE(log.has_value()) << log.error().message;
    return log ? std::move(*log) : nullptr;
  }

  static VerifyReport verify(AuditLog& log) {
    auto report = log.verify();
    EXPECT_TRUE(report.has_value()) << report.error().message;
    return report.value_or(VerifyReport{});
  }

  // An edit by someone with write access to the database but not the key: past the
  // append-only triggers, as the table's owner could.
  void edit(const std::string& sql) const {
    db_->exec(postgres() ? "ALTER TABLE connection_log DISABLE TRIGGER USER; " + sql +
                               "; ALTER TABLE connection_log ENABLE TRIGGER USER;"
                         : "DROP TRIGGER connection_log_no_update; " + sql + ";");
  }

  test::TempDir dir_;
  MasterKey key_ = MasterKey::from_bytes(Secret(std::string(MasterKey::size, 'k'))).value();
  std::optional<test::TestDatabase> db_;
  std::unique_ptr<CredentialsStore> store_;
};

TEST_P(AuditLogEngineTest, AppendQueryAndVerifyAcrossReopen) {
  {
    auto log = open_log();
    for (int i = 1; i <= 5; ++i) {
      ASSERT_TRUE(log->append(connection(i * 1000, "a@x.com", "row " + std::to_string(i))));
    }
  }
  auto log = open_log();
  std::vector<ConnectionRecord> batch{connection(6000, "b@x.com", "row 6"),
                                      connection(7000, "a@x.com", "row 7")};
  const auto last = log->append_batch(batch);
  ASSERT_TRUE(last.has_value()) << last.error().message;
  EXPECT_EQ(*last, 7);

  const auto report = verify(*log);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.rows, 7);
  EXPECT_EQ(report.head_id, 7);

  AuditQuery query;
  query.account = "a@x.com";
  query.limit = 2;  // the newest two, oldest first
  const auto rows = log->query(query).value();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].close_reason, "row 5");
  EXPECT_EQ(rows[1].close_reason, "row 7");
  EXPECT_EQ(rows[1].prev_hash, log->query(AuditQuery{}).value()[5].hash);
  AuditQuery window;
  window.since_ms = 2000;
  window.until_ms = 4000;
  EXPECT_EQ(log->query(window).value().size(), 3u);  // rows 2, 3 and 4 were open in it
}

TEST_P(AuditLogEngineTest, ConcurrentAppendsFromThreeInstancesFormOneChain) {
  // Three logs on connections of their own, as three proxy instances, each appending batches
  // from its writer thread at the same time.
  constexpr int instances = 3;
  constexpr int batches = 40;
  if (postgres()) {
    // Whatever the database's default isolation: under REPEATABLE READ an append that waited
    // for the chain's lock would read the head as it was before the wait (the review's repro).
    db_->exec(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation "
        "= ''repeatable read''', current_database()); END $$");
  }
  std::vector<std::unique_ptr<AuditLog>> logs;
  for (int i = 0; i < instances; ++i) {
    logs.push_back(open_log());
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int i = 0; i < instances; ++i) {
    writers.emplace_back([&, i] {
      for (int b = 0; b < batches; ++b) {
        std::vector<ConnectionRecord> batch;
        for (int n = 0; n <= b % 3; ++n) {
          batch.push_back(connection(1000 + b, "a@x.com",
                                     "instance " + std::to_string(i) + " batch " +
                                         std::to_string(b) + " row " + std::to_string(n)));
        }
        if (!logs[i]->append_batch(batch)) {
          ++failures;
        }
      }
    });
  }
  for (auto& w : writers) {
    w.join();
  }
  EXPECT_EQ(failures.load(), 0);

  // Every row once, ids consecutive, one chain that verifies.
  const int expected =
      instances * (batches / 3 * 6 + (batches % 3 >= 1 ? 1 : 0) + (batches % 3 >= 2 ? 2 : 0));
  const auto rows = logs[0]->query(AuditQuery{}).value();
  ASSERT_EQ(static_cast<int>(rows.size()), expected);
  std::map<std::string, int> seen;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].id, static_cast<std::int64_t>(i) + 1);
    ++seen[rows[i].close_reason];
  }
  EXPECT_EQ(static_cast<int>(seen.size()), expected) << "a row was written twice";
  const auto report = verify(*logs[2]);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.head_id, expected);
}

TEST_P(AuditLogEngineTest, AnEditedRowIsFoundAtThatRowAndAppendsStillChain) {
  auto log = open_log();
  for (int i = 1; i <= 4; ++i) {
    ASSERT_TRUE(log->append(connection(i * 1000, "a@x.com", "row " + std::to_string(i))));
  }
  edit("UPDATE connection_log SET bytes_upstream_to_client = 1 WHERE id = 3");
  const auto report = verify(*log);
  EXPECT_FALSE(report.intact);
  EXPECT_EQ(report.broken_at, 3);
  EXPECT_NE(report.reason.find("MAC"), std::string::npos) << report.reason;
}

TEST_P(AuditLogEngineTest, TheTableRefusesPlainUpdatesAndDeletes) {
  auto log = open_log();
  ASSERT_TRUE(log->append(connection(1000, "a@x.com", "row 1")));
  EXPECT_THROW(db_->exec("UPDATE connection_log SET account = 'b@x.com'"), std::runtime_error);
  EXPECT_THROW(db_->exec("DELETE FROM connection_log"), std::runtime_error);
  EXPECT_EQ(log->query(AuditQuery{}).value().size(), 1u);
}

TEST_P(AuditLogEngineTest, RetentionDeletesAPrefixAndTheTriggerIsBackAfterwards) {
  auto log = open_log();
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(log->append(connection(i * 1000, "a@x.com", "row " + std::to_string(i))));
  }
  // Two rows a transaction: rows 1-2, then row 3.
  const auto pruned = log->prune(3500, 10'000, 2);
  ASSERT_TRUE(pruned.has_value()) << pruned.error().message;
  EXPECT_EQ(pruned->deleted, 3);
  EXPECT_EQ(pruned->first_kept, 4);
  ASSERT_TRUE(log->append(connection(11'000, "a@x.com", "row 9")));
  const auto report = verify(*log);
  EXPECT_TRUE(report.intact) << report.reason;
  EXPECT_EQ(report.first_id, 4);
  EXPECT_EQ(report.head_id, 9);  // 7 and 8 are the retention events, one a chunk
  EXPECT_THROW(db_->exec("DELETE FROM connection_log WHERE id = 4"), std::runtime_error);
}

TEST_P(AuditLogEngineTest, APruneAfterAnotherInstancesPruneDeletesNothingMore) {
  auto one = open_log();
  auto two = open_log();
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(one->append(connection(i * 1000, "a@x.com", "row " + std::to_string(i))));
  }
  // The second instance finds the prefix pruned by the first (its daily prune).
  const auto first = one->prune(3500, 10'000);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(first->deleted, 3);
  const auto second = two->prune(3500, 10'000);
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_EQ(second->deleted, 0);
  EXPECT_EQ(second->first_kept, 4);
  EXPECT_TRUE(verify(*two).intact);
}

TEST_P(AuditLogEngineTest, SummaryCountsConnectionsPerAccount) {
  auto log = open_log();
  auto failed = connection(2000, "a@x.com", "bad password");
  failed.outcome = ConnectionOutcome::auth_failed;
  std::vector<ConnectionRecord> rows{connection(1000, "a@x.com", "ok"), failed,
                                     connection(3000, "b@x.com", "ok"),
                                     event_record(AuditEvent::refresh_ok, "a@x.com", "", 2500)};
  ASSERT_TRUE(log->append_batch(rows));
  const auto summary = log->summarize(std::nullopt).value();
  ASSERT_EQ(summary.size(), 2u);
  EXPECT_EQ(summary[0].account, "a@x.com");
  EXPECT_EQ(summary[0].connections, 2);
  EXPECT_EQ(summary[0].failures, 1);
  EXPECT_EQ(summary[0].bytes_upstream_to_client, 4000);
  EXPECT_EQ(summary[0].last_seen_ms, 2000);
  EXPECT_EQ(summary[0].last_refresh_ms, 2500);
  EXPECT_EQ(summary[0].status, "removed");  // no account row in the store
  EXPECT_EQ(summary[1].account, "b@x.com");
  EXPECT_EQ(summary[1].connections, 1);
}

TEST_P(AuditLogEngineTest, AnotherKeyCannotVerifyOrWrite) {
  ASSERT_TRUE(open_log()->append(connection(1000, "a@x.com", "row 1")));
  const auto other = MasterKey::from_bytes(Secret(std::string(MasterKey::size, 'o'))).value();
  const auto opened = AuditLog::open(db_->database(), db_->password(), other);
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().code, Errc::key_error) << opened.error().message;
  EXPECT_FALSE(AuditLog::open_for_verifying(db_->database(), db_->password(), other));
}

TEST_P(AuditLogEngineTest, AppendsGoOnAfterTheServerRestarts) {
  if (!postgres()) {
    GTEST_SKIP() << "a server restart is PostgreSQL's case";
  }
  auto log = open_log();
  ASSERT_TRUE(log->append(connection(1000, "a@x.com", "before")));
  db_->stop_server();
  db_->start_server();
  // The connection was dropped; the append opens a new one and repeats its BEGIN.
  const auto after = log->append(connection(2000, "a@x.com", "after"));
  ASSERT_TRUE(after.has_value()) << after.error().message;
  EXPECT_EQ(*after, 2);
  EXPECT_TRUE(verify(*log).intact);
}

INSTANTIATE_TEST_SUITE_P(Engines, AuditLogEngineTest,
                         ::testing::Values(test::Engine::sqlite, test::Engine::postgresql),
                         [](const auto& info) { return test::to_string(info.param); });

}  // namespace
}  // namespace iop::storage
