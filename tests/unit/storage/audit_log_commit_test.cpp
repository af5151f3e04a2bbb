// A COMMIT whose reply is lost (issue #10): the server may have committed the batch before the
// connection dropped. The writer retries the same rows first; the log must then neither write
// them twice nor lose any. Driven through a wrapper of the real SQLite rows whose commit() can
// fail after committing ("reply lost") or instead of committing. Also a prune whose later chunk
// fails to commit.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "storage/audit_log.hpp"
#include "storage/log_rows.hpp"
#include "tests/support/process.hpp"

namespace iop::storage {
namespace {

enum class CommitFault { none, reply_lost, not_committed };

class FaultyTransaction final : public LogTransaction {
 public:
  FaultyTransaction(std::unique_ptr<LogTransaction> inner, CommitFault& fault, int& commits_first)
      : inner_(std::move(inner)), fault_(fault), commits_first_(commits_first) {}
  Result<void> commit() override {
    if (commits_first_ > 0) {
      --commits_first_;
      return inner_->commit();
    }
    const CommitFault fault = std::exchange(fault_, CommitFault::none);
    if (fault == CommitFault::not_committed) {
      return fail(Errc::storage_unavailable, "server closed the connection unexpectedly");
    }
    IOP_TRY(inner_->commit());
    if (fault == CommitFault::reply_lost) {
      return fail(Errc::storage_unavailable, "server closed the connection unexpectedly");
    }
    return {};
  }

 private:
  std::unique_ptr<LogTransaction> inner_;  // rolled back when destroyed uncommitted
  CommitFault& fault_;
  int& commits_first_;
};

// Every call to the real rows; the next write transaction's commit after `commits_first` more
// fails as `fault` says.
class FaultyRows final : public LogRows {
 public:
  FaultyRows(std::unique_ptr<LogRows> inner, CommitFault& fault, int& commits_first)
      : inner_(std::move(inner)), fault_(fault), commits_first_(commits_first) {}
  [[nodiscard]] const std::string& where() const override { return inner_->where(); }
  Result<std::unique_ptr<LogTransaction>> begin_append() override {
    IOP_TRY_ASSIGN(auto tx, inner_->begin_append());
    return std::unique_ptr<LogTransaction>(
        std::make_unique<FaultyTransaction>(std::move(tx), fault_, commits_first_));
  }
  Result<std::unique_ptr<LogTransaction>> begin_snapshot() override {
    return inner_->begin_snapshot();
  }
  Result<std::optional<std::string>> read_meta(std::string_view key) override {
    return inner_->read_meta(key);
  }
  Result<void> write_meta(std::string_view key, std::string_view value) override {
    return inner_->write_meta(key, value);
  }
  Result<void> delete_meta(std::string_view key) override { return inner_->delete_meta(key); }
  Result<KeyCheck> read_key_check(const MasterKey& key) override {
    return inner_->read_key_check(key);
  }
  Result<void> write_key_check(const MasterKey& key, KeyCheck version) override {
    return inner_->write_key_check(key, version);
  }
  Result<std::int64_t> count() override { return inner_->count(); }
  Result<std::int64_t> max_id() override { return inner_->max_id(); }
  Result<std::int64_t> min_id() override { return inner_->min_id(); }
  Result<std::optional<LogRow>> row(std::int64_t id) override { return inner_->row(id); }
  Result<void> insert(const LogRow& row) override { return inner_->insert(row); }
  Result<void> scan(const std::function<Result<bool>(const LogRow&)>& visit) override {
    return inner_->scan(visit);
  }
  Result<std::vector<LogRow>> select(const AuditQuery& filter) override {
    return inner_->select(filter);
  }
  Result<std::vector<AccountActivity>> summarize(std::optional<std::int64_t> since_ms) override {
    return inner_->summarize(since_ms);
  }
  Result<void> delete_through(std::int64_t last) override { return inner_->delete_through(last); }

 private:
  std::unique_ptr<LogRows> inner_;
  CommitFault& fault_;
  int& commits_first_;
};

ConnectionRecord row(const std::string& reason) {
  ConnectionRecord r;
  r.started_at_ms = 1000;
  r.ended_at_ms = 2000;
  r.client_address = "127.0.0.1";
  r.account = "a@x.com";
  r.close_reason = reason;
  return r;
}

class AuditLogCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rows = open_sqlite_log_rows(dir_.path() / "log.db");
    ASSERT_TRUE(rows.has_value()) << rows.error().message;
    auto log = AuditLog::open_rows(
        std::make_unique<FaultyRows>(std::move(*rows), fault_, commits_first_), key_);
    ASSERT_TRUE(log.has_value()) << log.error().message;
    log_ = std::move(*log);
  }

  // The close reasons in the log, oldest first, and whether it verifies.
  std::vector<std::string> reasons() {
    std::vector<std::string> out;
    const auto rows = log_->query(AuditQuery{}).value();  // a copy: the Result is a temporary
    for (const auto& r : rows) {
      out.push_back(r.close_reason);
    }
    EXPECT_TRUE(log_->verify().value().intact);
    return out;
  }

  test::TempDir dir_;
  MasterKey key_ = MasterKey::from_bytes(Secret(std::string(MasterKey::size, 'k'))).value();
  CommitFault fault_ = CommitFault::none;
  int commits_first_ = 0;
  std::unique_ptr<AuditLog> log_;
};

TEST_F(AuditLogCommitTest, ABatchCommittedDespiteTheErrorIsNotWrittenAgain) {
  const std::vector<ConnectionRecord> batch{row("one"), row("two")};
  fault_ = CommitFault::reply_lost;
  ASSERT_FALSE(log_->append_batch(batch).has_value());
  // The writer's retry: the same rows first, and one that arrived meanwhile.
  const std::vector<ConnectionRecord> retry{row("one"), row("two"), row("three")};
  const auto last = log_->append_batch(retry);
  ASSERT_TRUE(last.has_value()) << last.error().message;
  EXPECT_EQ(*last, 3);
  EXPECT_EQ(reasons(), (std::vector<std::string>{"one", "two", "three"}));
}

TEST_F(AuditLogCommitTest, ABatchThatDidNotCommitIsWrittenOnRetry) {
  const std::vector<ConnectionRecord> batch{row("one"), row("two")};
  fault_ = CommitFault::not_committed;
  ASSERT_FALSE(log_->append_batch(batch).has_value());
  const auto last = log_->append_batch(batch);
  ASSERT_TRUE(last.has_value()) << last.error().message;
  EXPECT_EQ(*last, 2);
  EXPECT_EQ(reasons(), (std::vector<std::string>{"one", "two"}));
}

TEST_F(AuditLogCommitTest, TwoLostRepliesInARowStillWriteEachRowOnce) {
  fault_ = CommitFault::reply_lost;
  ASSERT_FALSE(log_->append_batch(std::vector{row("one")}).has_value());
  // The retry commits "two" after the confirmed "one", and loses its reply too.
  fault_ = CommitFault::reply_lost;
  ASSERT_FALSE(log_->append_batch(std::vector{row("one"), row("two")}).has_value());
  const auto last = log_->append_batch(std::vector{row("one"), row("two"), row("three")});
  ASSERT_TRUE(last.has_value()) << last.error().message;
  EXPECT_EQ(*last, 3);
  EXPECT_EQ(reasons(), (std::vector<std::string>{"one", "two", "three"}));
}

TEST_F(AuditLogCommitTest, OtherRowsAfterAFailureAreNeverTakenForTheCommittedOnes) {
  fault_ = CommitFault::reply_lost;
  ASSERT_FALSE(log_->append_batch(std::vector{row("one")}).has_value());
  // Not the retry the writer makes: nothing is skipped (a duplicate beats a lost row).
  ASSERT_TRUE(log_->append_batch(std::vector{row("other")}).has_value());
  EXPECT_EQ(reasons(), (std::vector<std::string>{"one", "other"}));
}

TEST_F(AuditLogCommitTest, APruneThatFailsBetweenChunksLeavesAVerifiableChainAndGoesOnNextTime) {
  // Rows 1-7 ended at 2 s (row()), row 8 at 100 s.
  for (int i = 1; i <= 7; ++i) {
    ASSERT_TRUE(log_->append(row("old " + std::to_string(i))).has_value());
  }
  auto recent = row("recent");
  recent.ended_at_ms = 100'000;
  ASSERT_TRUE(log_->append(recent).has_value());
  // Chunks of 3 rows: the first commits, the second does not.
  commits_first_ = 1;
  fault_ = CommitFault::not_committed;
  ASSERT_FALSE(log_->prune(50'000, 200'000, 3).has_value());
  const auto half = log_->verify().value();
  EXPECT_TRUE(half.intact) << half.reason;
  EXPECT_EQ(half.first_id, 4) << "the first chunk stays deleted";
  auto kept = reasons();
  ASSERT_EQ(kept.size(), 6u);  // rows 4-8 and the first chunk's event
  EXPECT_EQ(kept.front(), "old 4");
  EXPECT_NE(kept.back().find("deleted rows 1 to 3"), std::string::npos) << kept.back();
  // The next prune deletes the rest of the old prefix (the events are recent: kept).
  const auto rest = log_->prune(50'000, 200'000, 3);
  ASSERT_TRUE(rest.has_value()) << rest.error().message;
  EXPECT_EQ(rest->deleted, 4);
  EXPECT_EQ(rest->first_kept, 8);
  kept = reasons();
  ASSERT_EQ(kept.size(), 4u);
  EXPECT_EQ(kept[0], "recent");
  EXPECT_NE(kept[2].find("deleted rows 4 to 6"), std::string::npos) << kept[2];
  EXPECT_NE(kept[3].find("deleted rows 7 to 7"), std::string::npos) << kept[3];
}

}  // namespace
}  // namespace iop::storage
