// AuditWriter over a fake sink that can be made to fail or to hold a batch: batches form, a
// failing database keeps the rows and they are written later in order, the bound drops and the
// dropped-count row follows, flush() and its window, the error line at most once per interval.
// No sleeps: the tests wait for the writer's stats (tests/support/wait_until.hpp); the interval
// runs on a fake clock.

#include "storage/audit_writer.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "tests/support/log_capture.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::storage {
namespace {

using namespace std::chrono_literals;
using test::wait_until;

ConnectionRecord row(int port) {
  ConnectionRecord r;
  r.started_at_ms = 1'700'000'000'000 + port;
  r.ended_at_ms = 1'700'000'000'500 + port;
  r.client_address = "127.0.0.1";
  r.client_port = port;
  r.listener = "tls:127.0.0.1:1993";
  r.username = "alice@example.com";
  r.account = "alice@example.com";
  return r;
}

// Records every batch it accepts; fails while `failing`; holds a call while `held`.
class FakeSink {
 public:
  AuditBatchSink sink() {
    return [this](std::span<const ConnectionRecord> rows) -> Result<std::int64_t> {
      std::unique_lock lock(mutex_);
      ++calls_;
      changed_.notify_all();
      changed_.wait(lock, [this] { return !held_; });
      if (failing_ || fail_next_ > 0) {
        if (fail_next_ > 0) {
          --fail_next_;
        }
        return fail(Errc::storage_unavailable, "database is locked (fake)");
      }
      batches_.emplace_back(rows.begin(), rows.end());
      last_id_ += static_cast<std::int64_t>(rows.size());
      return last_id_;
    };
  }
  void set_failing(bool failing) {
    std::lock_guard lock(mutex_);
    failing_ = failing;
  }
  void fail_next(int n) {
    std::lock_guard lock(mutex_);
    fail_next_ = n;
  }
  void hold(bool held) {
    std::lock_guard lock(mutex_);
    held_ = held;
    changed_.notify_all();
  }
  int calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  std::vector<std::size_t> batch_sizes() {
    std::lock_guard lock(mutex_);
    std::vector<std::size_t> out;
    for (const auto& b : batches_) {
      out.push_back(b.size());
    }
    return out;
  }
  // Every accepted row, in the order written.
  std::vector<ConnectionRecord> rows() {
    std::lock_guard lock(mutex_);
    std::vector<ConnectionRecord> out;
    for (const auto& b : batches_) {
      out.insert(out.end(), b.begin(), b.end());
    }
    return out;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool failing_ = false;
  int fail_next_ = 0;
  bool held_ = false;
  int calls_ = 0;
  std::int64_t last_id_ = 0;
  std::vector<std::vector<ConnectionRecord>> batches_;
};

std::vector<int> ports(const std::vector<ConnectionRecord>& rows) {
  std::vector<int> out;
  for (const auto& r : rows) {
    out.push_back(r.client_port);
  }
  return out;
}

std::vector<int> range(int from, int to) {
  std::vector<int> out;
  for (int i = from; i <= to; ++i) {
    out.push_back(i);
  }
  return out;
}

std::size_t count_of(const std::string& text, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

AuditWriterSettings fast() {
  AuditWriterSettings s;
  s.linger = 0ms;
  s.retry_initial = 1ms;
  s.retry_max = 2ms;
  return s;
}

TEST(AuditWriterTest, RowsThatArriveDuringAWriteFormTheNextBatch) {
  FakeSink fake;
  fake.hold(true);
  AuditWriter writer(fake.sink(), fast());
  writer.enqueue(row(1));
  ASSERT_TRUE(wait_until([&] { return fake.calls() == 1; }, 10s, "the first batch"));
  // The sink is stuck in a write: enqueue still returns at once.
  for (int port = 2; port <= 500; ++port) {
    writer.enqueue(row(port));
  }
  EXPECT_EQ(writer.stats().queued, 500u);
  fake.hold(false);
  ASSERT_TRUE(wait_until([&] { return writer.stats().written == 500; }, 10s, "500 rows"));
  EXPECT_EQ(fake.batch_sizes(), (std::vector<std::size_t>{1, 499}));
  EXPECT_EQ(ports(fake.rows()), range(1, 500));
  const auto s = writer.stats();
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.batches, 2u);
  EXPECT_EQ(s.dropped, 0u);
  EXPECT_FALSE(s.failing);
}

TEST(AuditWriterTest, LingerGathersRowsIntoOneBatchAndFlushEndsItEarly) {
  FakeSink fake;
  auto settings = fast();
  settings.linger = std::chrono::minutes(10);  // only the flush can end it
  AuditWriter writer(fake.sink(), settings);
  for (int port = 1; port <= 20; ++port) {
    writer.enqueue(row(port));
  }
  EXPECT_EQ(writer.flush(60s), 0u);
  EXPECT_EQ(fake.batch_sizes(), (std::vector<std::size_t>{20}));
  EXPECT_EQ(ports(fake.rows()), range(1, 20));
}

TEST(AuditWriterTest, AFailingSinkKeepsTheRowsAndWritesThemLaterInOrder) {
  test::LogCapture log;
  FakeSink fake;
  fake.set_failing(true);
  AuditWriter writer(fake.sink(), fast());
  for (int port = 1; port <= 5; ++port) {
    writer.enqueue(row(port));
  }
  ASSERT_TRUE(wait_until([&] { return writer.stats().failed_batches >= 3; }, 10s, "retries"));
  for (int port = 6; port <= 10; ++port) {
    writer.enqueue(row(port));
  }
  EXPECT_TRUE(writer.stats().failing);
  EXPECT_EQ(writer.stats().queued, 10u);
  EXPECT_TRUE(fake.rows().empty());
  fake.set_failing(false);
  ASSERT_TRUE(wait_until([&] { return writer.stats().written == 10; }, 10s, "10 rows"));
  EXPECT_EQ(ports(fake.rows()), range(1, 10));
  EXPECT_FALSE(writer.stats().failing);
  EXPECT_EQ(writer.stats().queued, 0u);
  EXPECT_TRUE(log.contains("database is locked (fake)"));
  EXPECT_TRUE(log.contains("writable again"));
}

TEST(AuditWriterTest, AFullQueueDropsTheNewestRowsAndRecordsHowManyOnceWritingWorks) {
  FakeSink fake;
  fake.set_failing(true);
  auto settings = fast();
  settings.max_queued_rows = 3;
  AuditWriter writer(fake.sink(), settings);
  for (int port = 1; port <= 7; ++port) {
    writer.enqueue(row(port));
  }
  EXPECT_EQ(writer.stats().dropped, 4u);
  EXPECT_EQ(writer.stats().queued, 3u);
  ASSERT_TRUE(wait_until([&] { return writer.stats().failed_batches >= 1; }, 10s, "a failure"));
  fake.set_failing(false);
  ASSERT_TRUE(wait_until([&] { return writer.stats().written == 4; }, 10s, "3 rows + 1"));
  const auto rows = fake.rows();
  ASSERT_EQ(rows.size(), 4u);
  // The oldest rows stay, then the row that counts the newer ones dropped.
  EXPECT_EQ(ports({rows.begin(), rows.begin() + 3}), range(1, 3));
  const auto& gap = rows[3];
  EXPECT_EQ(gap.close_reason, "4 rows dropped while the database was unwritable");
  EXPECT_EQ(gap.event, "audit_rows_dropped");
  EXPECT_EQ(gap.started_at_ms, row(4).ended_at_ms);  // when the first dropped connection ended
  EXPECT_EQ(gap.ended_at_ms, row(7).ended_at_ms);    // and the last
  EXPECT_TRUE(gap.account.empty());
  EXPECT_EQ(gap.client_port, 0);
  // Counted once: later rows are written without another gap row.
  writer.enqueue(row(8));
  EXPECT_EQ(writer.flush(60s), 0u);
  const auto after = fake.rows();
  EXPECT_EQ(ports({after.begin() + 4, after.end()}), std::vector<int>{8});
  EXPECT_EQ(writer.stats().dropped, 4u);
}

TEST(AuditWriterTest, FlushRetriesAFailedBatchAtOnce) {
  FakeSink fake;
  fake.fail_next(1);
  auto settings = fast();
  settings.retry_initial = std::chrono::minutes(10);  // only the flush can cut the pause short
  settings.retry_max = std::chrono::minutes(10);
  AuditWriter writer(fake.sink(), settings);
  writer.enqueue(row(1));
  ASSERT_TRUE(wait_until([&] { return writer.stats().failed_batches == 1; }, 10s, "a failure"));
  EXPECT_EQ(writer.flush(60s), 0u);
  EXPECT_EQ(ports(fake.rows()), std::vector<int>{1});
}

TEST(AuditWriterTest, FlushReturnsTheRowsItCouldNotWriteWithinItsWindow) {
  test::LogCapture log;
  FakeSink fake;
  fake.set_failing(true);
  auto settings = fast();
  settings.final_flush = 0ms;
  AuditWriter writer(fake.sink(), settings);
  for (int port = 1; port <= 3; ++port) {
    writer.enqueue(row(port));
  }
  EXPECT_EQ(writer.flush(0ms), 3u);
  EXPECT_TRUE(log.contains("3 row(s) still unwritten"));
  // Enqueueing still works after a flush, and the rows are still there to write.
  writer.enqueue(row(4));
  fake.set_failing(false);
  EXPECT_EQ(writer.flush(60s), 0u);
  EXPECT_EQ(ports(fake.rows()), range(1, 4));
}

TEST(AuditWriterTest, TheDestructorWritesWhatIsQueued) {
  FakeSink fake;
  {
    auto settings = fast();
    settings.linger = std::chrono::minutes(10);
    AuditWriter writer(fake.sink(), settings);
    writer.enqueue(row(1));
    writer.enqueue(row(2));
  }
  EXPECT_EQ(ports(fake.rows()), range(1, 2));
}

TEST(AuditWriterTest, TheErrorIsLoggedAtMostOncePerInterval) {
  test::LogCapture log;
  std::mutex clock_mutex;
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  FakeSink fake;
  fake.set_failing(true);
  auto settings = fast();
  settings.clock = [&] {
    std::lock_guard lock(clock_mutex);
    return now;
  };
  AuditWriter writer(fake.sink(), settings);
  writer.enqueue(row(1));
  ASSERT_TRUE(wait_until([&] { return writer.stats().failed_batches >= 5; }, 10s, "retries"));
  EXPECT_EQ(count_of(log.text(), "cannot write"), 1u);
  {
    std::lock_guard lock(clock_mutex);
    now += 59s;
  }
  auto seen = writer.stats().failed_batches;
  ASSERT_TRUE(wait_until([&] { return writer.stats().failed_batches >= seen + 3; }, 10s));
  EXPECT_EQ(count_of(log.text(), "cannot write"), 1u);
  {
    std::lock_guard lock(clock_mutex);
    now += 1s;
  }
  seen = writer.stats().failed_batches;
  ASSERT_TRUE(wait_until([&] { return writer.stats().failed_batches >= seen + 3; }, 10s));
  EXPECT_EQ(count_of(log.text(), "cannot write"), 2u);
  EXPECT_EQ(writer.stats().errors_logged, 2u);
  EXPECT_TRUE(log.contains("failed attempt(s) since the last report"));
  // Recovery, then a new outage: reported at once, whatever the interval.
  fake.set_failing(false);
  ASSERT_TRUE(wait_until([&] { return writer.stats().written == 1; }, 10s, "the row"));
  fake.set_failing(true);
  writer.enqueue(row(2));
  ASSERT_TRUE(wait_until([&] { return writer.stats().errors_logged == 3; }, 10s, "a new report"));
  fake.set_failing(false);
}

}  // namespace
}  // namespace iop::storage
