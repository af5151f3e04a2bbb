// copy_connection_log (storage/audit_log.hpp): `migrate --to`, the connection log's part.

#include <functional>
#include <string>

#include "storage/audit_log.hpp"
#include "storage/log_rows.hpp"

namespace iop::storage {

namespace {

// The meta marks of the chain (audit_log.cpp): copied as they are, with the rows, so the copy's
// MACs and marks verify exactly as the source's did (they cover names and fields, not where the
// log is stored).
constexpr std::string_view marks[] = {"connection_log_head", "connection_log_base",
                                      "connection_log_keyed_from"};

bool same_report(const VerifyReport& a, const VerifyReport& b) {
  return a.intact == b.intact && a.rows == b.rows && a.head_id == b.head_id &&
         a.head_hash == b.head_hash && a.first_id == b.first_id && a.unkeyed_rows == b.unkeyed_rows;
}

// The source's report, once it verifies.
Result<VerifyReport> verified_source(const std::filesystem::path& from, const MasterKey& key) {
  {
    // Opened for writing first: a log from before keying is keyed now, as any open would.
    IOP_TRY_ASSIGN(auto source, AuditLog::open(from, key));
    IOP_TRY_ASSIGN(const auto report, source->verify());
    if (!report.intact) {
      return fail(Errc::credentials_corrupt,
                  "the connection log in " + from.string() + " does not verify (row " +
                      std::to_string(report.broken_at) + ": " + report.reason +
                      "): nothing was copied; run 'imap-oauth2-proxy audit --verify', or move "
                      "the accounts only with 'migrate --keep-connection-log' (the log then "
                      "stays in this file, as [storage] connection_log)");
    }
  }
  IOP_TRY_ASSIGN(auto source_log, AuditLog::open_for_verifying(from, key));
  return source_log->verify();
}

// Whether the target already holds the copy: nothing (false), exactly the source's log (true,
// a migrate that stopped after committing it), or another log (Errc::already_exists).
Result<bool> target_holds_copy(const VerifyReport& source, std::string_view to,
                               const Secret& to_password, const MasterKey& key) {
  IOP_TRY_ASSIGN(auto target, open_pg_log_rows(to, to_password));
  IOP_TRY_ASSIGN(const std::int64_t rows, target->count());
  IOP_TRY_ASSIGN(const auto head, target->read_meta(marks[0]));
  if (rows == 0 && !head) {
    return false;
  }
  auto copy = AuditLog::open_for_verifying(to, to_password, key);
  if (copy) {
    auto report = (*copy)->verify();
    if (report && same_report(source, *report)) {
      return true;
    }
  }
  return fail(Errc::already_exists,
              "the target database's connection log already holds " + std::to_string(rows) +
                  " row(s) that are not this log's copy: migrate copies into a database without "
                  "a log (nothing was written)");
}

}  // namespace

Result<void> check_connection_log_copy(const std::filesystem::path& from, std::string_view to,
                                       const Secret& to_password, const MasterKey& key) {
  IOP_TRY_ASSIGN(const auto source, verified_source(from, key));
  IOP_TRY(target_holds_copy(source, to, to_password, key));
  return {};
}

Result<VerifyReport> copy_connection_log(const std::filesystem::path& from, std::string_view to,
                                         const Secret& to_password, const MasterKey& key,
                                         const std::function<Result<void>()>& before_commit) {
  IOP_TRY_ASSIGN(const VerifyReport before, verified_source(from, key));
  IOP_TRY_ASSIGN(const bool copied, target_holds_copy(before, to, to_password, key));
  if (copied) {
    // A migrate that stopped after the log committed: finish the accounts' part only.
    IOP_TRY(before_commit());
    return before;
  }

  IOP_TRY_ASSIGN(auto source, open_sqlite_log_rows(from));
  IOP_TRY_ASSIGN(auto target, open_pg_log_rows(to, to_password));
  {
    // One transaction on each side: a snapshot of the source, all or nothing in the target,
    // which holds the chain's lock so no instance appends in between.
    IOP_TRY_ASSIGN(auto read, source->begin_snapshot());
    IOP_TRY_ASSIGN(auto write, target->begin_append());
    IOP_TRY_ASSIGN(const std::int64_t present, target->count());
    if (present != 0) {
      return fail(Errc::already_exists,
                  "the target database's connection log gained rows "
                  "during the copy (an instance is running on it): "
                  "nothing was copied");
    }
    const auto copy_row = [&](const LogRow& row) -> Result<bool> {
      IOP_TRY(target->insert(row));
      return true;
    };
    IOP_TRY(source->scan(copy_row));
    for (const auto name : marks) {
      IOP_TRY_ASSIGN(const auto value, source->read_meta(name));
      if (value) {
        IOP_TRY(target->write_meta(name, *value));
      }
    }
    // The accounts, while this copy can still roll back: if they fail, the target keeps no log
    // either, and migrate can simply run again.
    IOP_TRY(before_commit());
    IOP_TRY(write->commit());
    IOP_TRY(read->commit());
  }

  IOP_TRY_ASSIGN(auto copied_log, AuditLog::open_for_verifying(to, to_password, key));
  IOP_TRY_ASSIGN(const VerifyReport after, copied_log->verify());
  if (!same_report(before, after)) {
    return fail(Errc::internal,
                "the copied connection log verifies differently from the source (was serve "
                "still writing to " +
                    from.string() + "? stop it before migrating; " +
                    (after.intact ? "head " + std::to_string(after.head_id)
                                  : "broken at row " + std::to_string(after.broken_at) + ": " +
                                        after.reason) +
                    ", source head " + std::to_string(before.head_id) + ")");
  }
  return after;
}

}  // namespace iop::storage
