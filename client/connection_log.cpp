// The library's one use of the connection log: the same writer as the proxy's sessions.

#include "client/context.hpp"

namespace iop::client {

void write_connection_record(Context& context, const storage::ConnectionRecord& record) {
  if (context.services->audit_writer != nullptr && context.services->config.audit.connection_log) {
    context.services->audit_writer->enqueue(record);
  }
}

}  // namespace iop::client
