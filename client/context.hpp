#pragma once
// What every connection of one configuration file shares: the services `serve` uses (the
// credentials store, Redis, the token service with its single-flight and first-level cache),
// the proxy's upstream settings and TLS client context, and the connection log. One per
// configuration file per process, made on first use and kept until the process exits, so that
// connections share the token service as a proxy's sessions do.

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>

#include "app/services.hpp"
#include "common/asio.hpp"
#include "common/result.hpp"
#include "imap_oauth2_proxy/client.hpp"
#include "proxy/session.hpp"
#include "storage/audit_log.hpp"

namespace iop::client {

struct Context {
  Context() = default;
  // Finishes the services' pending work (connection-log rows posted by closing connections
  // refer to this context) before anything here goes away.
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  std::unique_ptr<app::Services> services;
  proxy::ProxySettings settings;
  std::shared_ptr<net::ssl::context> upstream_tls;
};

// The context of `config_file` (unset: the command line's lookup), made on first use. Blocking
// (files, database): call it from a worker. Throws imap_oauth2_proxy::Error (config, storage).
std::shared_ptr<Context> context_for(const std::optional<std::filesystem::path>& config_file);

// A one-thread pool for the blocking setup of async_get_imap_connection (context_for).
net::any_io_executor setup_executor();

// Queues `record` (listener "library") on the connection log of `context` (the services' writer,
// as the proxy's sessions do; [audit] connection_log = false writes none). Never blocks.
void write_connection_record(Context& context, const storage::ConnectionRecord& record);

// The public error for a service error.
imap_oauth2_proxy::ErrorKind error_kind(Errc code);
[[noreturn]] void throw_error(imap_oauth2_proxy::ErrorKind kind, const std::string& message);

}  // namespace iop::client
