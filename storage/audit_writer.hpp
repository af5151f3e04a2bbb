#pragma once
// The connection log's writer: sessions hand their row over and go on; one thread of its own
// writes what has queued in batches (issue #8, Audit: "writing the log never slows a session").
//
//   AuditWriter writer(audit_log_sink(*log));
//   writer.enqueue(record);                 // any thread: a lock, a push, a notify; no I/O
//   ...
//   writer.flush(std::chrono::seconds(10));  // at shutdown, after the sessions have ended
//
// Batching is what makes it cheap: rows that arrive while a batch is being written, or within
// `linger` of the first one, go into the next batch, one transaction for all of them.
//
// When the database is unwritable (full disk, a lock held past the busy timeout, a read-only
// file system) the proxy keeps serving: the rows stay queued in memory (at most
// `max_queued_rows`), the writer retries with a growing pause (`retry_initial` doubling to
// `retry_max`), logs the error at most once per `error_log_interval`, and writes everything, in
// order, once it can. Rows beyond the bound are dropped and counted; once writing works again a
// row with event `audit_rows_dropped` records how many (see audit_writer.cpp for which rows).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "storage/audit_log.hpp"

namespace iop::storage {

// Where the batches go: all of `rows` in one transaction, all or nothing, returning the last
// row's id (AuditLog::append_batch). Called on the writer's thread only, one call at a time.
using AuditBatchSink = std::function<Result<std::int64_t>(std::span<const ConnectionRecord> rows)>;

// The sink over `log` (which must outlive the writer).
AuditBatchSink audit_log_sink(AuditLog& log);

struct AuditWriterSettings {
  // Rows kept in memory while the database refuses them (queued and in the batch being
  // written). A row is about 300 bytes, so the default holds about 30 MB at most.
  std::size_t max_queued_rows = 100'000;
  // How long the writer waits after the first row of a batch for more to join it.
  std::chrono::milliseconds linger{10};
  // The pause after a failed batch: `retry_initial`, doubling after each further failure, at
  // most `retry_max`. A flush() retries at once.
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{5'000};
  // At most one error line per interval while the log stays unwritable.
  std::chrono::milliseconds error_log_interval{std::chrono::minutes(1)};
  // How long the destructor waits for rows queued after the last flush() (or without one).
  std::chrono::milliseconds final_flush{std::chrono::seconds(2)};
  // The clock of the error-log interval (a test seam); null: std::chrono::steady_clock::now.
  std::function<std::chrono::steady_clock::time_point()> clock;
};

struct AuditWriterStats {
  std::uint64_t written = 0;         // rows the sink accepted (dropped-count rows included)
  std::size_t queued = 0;            // rows waiting, the batch being written included
  std::uint64_t dropped = 0;         // rows dropped because the queue was full, since start
  std::uint64_t failed_batches = 0;  // sink calls that failed, since start
  std::uint64_t batches = 0;         // sink calls that succeeded, since start
  std::uint64_t errors_logged = 0;   // error lines logged about failed batches
  bool failing = false;              // the last sink call failed
};

class AuditWriter {
 public:
  // Starts the writer thread.
  explicit AuditWriter(AuditBatchSink sink, AuditWriterSettings settings = {});
  // Flushes rows queued since the last flush() (waiting at most settings.final_flush), then
  // stops the thread; rows still unwritten are logged as an error and lost.
  ~AuditWriter();
  AuditWriter(const AuditWriter&) = delete;
  AuditWriter& operator=(const AuditWriter&) = delete;

  // Queues `record` for the next batch. Never blocks on I/O and never fails: when
  // max_queued_rows rows are already waiting the record is dropped and counted. Thread-safe.
  void enqueue(ConnectionRecord record);

  // Waits until every queued row is written or `window` has passed, retrying a failing sink at
  // once. Returns how many rows are still unwritten (logged as an error when not 0). Blocks:
  // not for an I/O thread. Thread-safe; enqueue() keeps working during and after it.
  std::size_t flush(std::chrono::milliseconds window);

  [[nodiscard]] AuditWriterStats stats() const;

 private:
  void run();
  void after_failure(const Error& error, std::size_t rows);
  void after_success(std::size_t rows);
  std::chrono::steady_clock::time_point now() const;

  AuditBatchSink sink_;
  AuditWriterSettings settings_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;         // the writer: rows, a flush, or stop
  std::condition_variable idle_;         // flush(): a batch has ended
  std::vector<ConnectionRecord> queue_;  // oldest first
  std::size_t in_flight_ = 0;            // rows of the batch being written
  std::uint64_t flush_requests_ = 0;
  int flush_waiters_ = 0;
  bool enqueued_since_flush_ = false;
  bool flushed_ = false;
  bool stopping_ = false;
  bool waiting_for_rows_ = false;  // the writer sleeps until a row arrives: enqueue() wakes it
  // Dropped rows not yet recorded by an audit_rows_dropped row, and when they would have ended.
  std::uint64_t dropped_unrecorded_ = 0;
  std::int64_t first_dropped_ms_ = 0;
  std::int64_t last_dropped_ms_ = 0;
  std::chrono::milliseconds backoff_{0};
  std::optional<std::chrono::steady_clock::time_point> last_error_logged_;
  std::uint64_t failures_since_log_ = 0;
  std::string last_error_;
  AuditWriterStats stats_;

  std::thread thread_;  // last: started once everything above is constructed
};

}  // namespace iop::storage
