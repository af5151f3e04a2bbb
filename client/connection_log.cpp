// The library's one use of the connection log (kept in this one function so that a change of
// the AuditLog API touches nothing else).

#include <spdlog/spdlog.h>

#include "client/context.hpp"

namespace iop::client {

void write_connection_record(Context& context, const storage::ConnectionRecord& record) {
  std::lock_guard lock(context.audit_mutex);
  if (!context.audit) {
    auto log = storage::AuditLog::open(context.services->config.storage.database);
    if (!log) {
      spdlog::error("connection log unavailable: {}", log.error().message);
      return;
    }
    context.audit = std::move(*log);
  }
  if (auto appended = context.audit->append(record); !appended) {
    spdlog::error("connection log: row for {} not written: {}", record.account,
                  appended.error().message);
  }
}

}  // namespace iop::client
