#include "storage/audit_writer.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <iterator>

#include "common/clock.hpp"

namespace iop::storage {

namespace {

using namespace std::chrono_literals;

std::int64_t unix_ms_now() { return to_unix_millis(std::chrono::system_clock::now()); }

}  // namespace

AuditBatchSink audit_log_sink(AuditLog& log) {
  return [&log](std::span<const ConnectionRecord> rows) { return log.append_batch(rows); };
}

AuditWriter::AuditWriter(AuditBatchSink sink, AuditWriterSettings settings)
    : sink_(std::move(sink)), settings_(std::move(settings)) {
  // A zero pause would spin on a dead database.
  settings_.retry_initial = std::max(settings_.retry_initial, std::chrono::milliseconds(1));
  settings_.retry_max = std::max(settings_.retry_max, settings_.retry_initial);
  settings_.max_queued_rows = std::max<std::size_t>(settings_.max_queued_rows, 1);
  thread_ = std::thread([this] { run(); });
}

AuditWriter::~AuditWriter() {
  bool final_flush = false;
  {
    std::lock_guard lock(mutex_);
    // serve flushes with its own window first; a second wait here would only repeat its report.
    final_flush = queue_.size() + in_flight_ > 0 && (enqueued_since_flush_ || !flushed_);
  }
  if (final_flush) {
    flush(settings_.final_flush);
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void AuditWriter::enqueue(ConnectionRecord record) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    enqueued_since_flush_ = true;
    if (queue_.size() + in_flight_ >= settings_.max_queued_rows) {
      // The queue is full (the database has refused writes for a long time): the NEWEST row is
      // dropped, the rows already waiting stay. Kept rows then form one unbroken stretch from
      // the start of the outage, followed by the audit_rows_dropped row covering the gap; and
      // a client that floods the proxy with connections cannot push the rows of what it did
      // earlier out of the queue (dropping the oldest would let it).
      const auto when = record.ended_at_ms != 0 ? record.ended_at_ms : unix_ms_now();
      if (dropped_unrecorded_ == 0) {
        first_dropped_ms_ = when;
      }
      last_dropped_ms_ = when;
      ++dropped_unrecorded_;
      ++stats_.dropped;
      return;
    }
    queue_.push_back(std::move(record));
    wake = waiting_for_rows_;
    waiting_for_rows_ = false;  // one wake-up is enough
  }
  if (wake) {
    wake_.notify_one();
  }
}

std::size_t AuditWriter::flush(std::chrono::milliseconds window) {
  const auto deadline = std::chrono::steady_clock::now() + window;
  std::unique_lock lock(mutex_);
  flushed_ = true;
  enqueued_since_flush_ = false;
  ++flush_requests_;  // ends a retry pause at once (one early retry per flush)
  ++flush_waiters_;   // no linger while someone waits
  wake_.notify_all();
  idle_.wait_until(lock, deadline, [this] { return queue_.empty() && in_flight_ == 0; });
  --flush_waiters_;
  const std::size_t left = queue_.size() + in_flight_;
  if (left > 0) {
    spdlog::error(
        "connection log: {} row(s) still unwritten after {} ms of flushing (last error: {}); "
        "they are lost if the proxy exits now",
        left, window.count(), last_error_.empty() ? "none" : last_error_);
  }
  if (dropped_unrecorded_ > 0) {
    spdlog::error(
        "connection log: {} row(s) were dropped while the database was unwritable and no "
        "audit_rows_dropped row records them yet",
        dropped_unrecorded_);
  }
  return left;
}

AuditWriterStats AuditWriter::stats() const {
  std::lock_guard lock(mutex_);
  auto s = stats_;
  s.queued = queue_.size() + in_flight_;
  return s;
}

std::chrono::steady_clock::time_point AuditWriter::now() const {
  return settings_.clock ? settings_.clock() : std::chrono::steady_clock::now();
}

void AuditWriter::run() {
  std::unique_lock lock(mutex_);
  // From 0, not from flush_requests_: a flush() that came before this thread ran counts too.
  std::uint64_t seen_flush = 0;
  for (;;) {
    if (backoff_.count() > 0) {
      wake_.wait_for(lock, backoff_, [&] { return stopping_ || flush_requests_ != seen_flush; });
    } else {
      waiting_for_rows_ = true;
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      waiting_for_rows_ = false;
      // Let the rows of the next few milliseconds join this batch (a flush does not wait).
      if (settings_.linger.count() > 0) {
        wake_.wait_for(lock, settings_.linger, [&] { return stopping_ || flush_waiters_ > 0; });
      }
    }
    if (stopping_) {
      return;  // the destructor has flushed
    }
    seen_flush = flush_requests_;
    if (queue_.empty()) {
      continue;
    }
    std::vector<ConnectionRecord> batch;
    batch.swap(queue_);
    in_flight_ = batch.size();
    lock.unlock();
    Result<std::int64_t> written = fail(Errc::internal, "not written");
    try {
      written = sink_(batch);
    } catch (const std::exception& e) {
      written = fail(Errc::internal, fmt::format("connection log writer: {}", e.what()));
    }
    lock.lock();
    in_flight_ = 0;
    if (written) {
      after_success(batch.size());
    } else {
      // Back in front of what arrived meanwhile, in the original order.
      batch.insert(batch.end(), std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.end()));
      queue_.swap(batch);
      after_failure(written.error(), in_flight_ + queue_.size());
    }
    idle_.notify_all();
  }
}

void AuditWriter::after_success(std::size_t rows) {
  stats_.written += rows;
  ++stats_.batches;
  if (stats_.failing) {
    spdlog::warn("connection log: writable again; {} row(s) that waited are written", rows);
  }
  stats_.failing = false;
  backoff_ = 0ms;
  last_error_logged_.reset();  // a new outage is reported at once
  failures_since_log_ = 0;
  if (dropped_unrecorded_ > 0) {
    // Writing works again: record the gap, first in line, covering when the dropped
    // connections ended.
    ConnectionRecord gap = event_record(
        AuditEvent::audit_rows_dropped, "",
        fmt::format("{} rows dropped while the database was unwritable", dropped_unrecorded_),
        last_dropped_ms_);
    gap.started_at_ms = first_dropped_ms_;
    queue_.insert(queue_.begin(), std::move(gap));
    dropped_unrecorded_ = 0;
  }
}

void AuditWriter::after_failure(const Error& error, std::size_t rows) {
  ++stats_.failed_batches;
  stats_.failing = true;
  ++failures_since_log_;
  last_error_ = error.message;
  backoff_ =
      backoff_.count() == 0 ? settings_.retry_initial : std::min(backoff_ * 2, settings_.retry_max);
  const auto t = now();
  if (last_error_logged_ && t - *last_error_logged_ < settings_.error_log_interval) {
    return;
  }
  spdlog::error(
      "connection log: cannot write {} row(s): {} ({} failed attempt(s) since the last report; "
      "{} dropped so far; rows are kept in memory up to {} and retried every {} ms at most; "
      "sessions are not affected)",
      rows, error.message, failures_since_log_, stats_.dropped, settings_.max_queued_rows,
      settings_.retry_max.count());
  last_error_logged_ = t;
  failures_since_log_ = 0;
  ++stats_.errors_logged;
}

}  // namespace iop::storage
