#include "client/context.hpp"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <map>
#include <string>

#include "app/config.hpp"
#include "app/serve.hpp"
#include "certs/tls_context.hpp"
#include "common/log.hpp"

namespace imap_oauth2_proxy {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::needs_reauth:
      return "needs_reauth";
    case ErrorKind::not_found:
      return "not_found";
    case ErrorKind::auth_rejected:
      return "auth_rejected";
    case ErrorKind::upstream_unavailable:
      return "upstream_unavailable";
    case ErrorKind::token_unavailable:
      return "token_unavailable";
    case ErrorKind::config:
      return "config";
    case ErrorKind::storage:
      return "storage";
    case ErrorKind::protocol:
      return "protocol";
    case ErrorKind::closed:
      return "closed";
    case ErrorKind::usage:
      return "usage";
    case ErrorKind::internal:
      return "internal";
  }
  return "internal";
}

Error::Error(ErrorKind kind, const std::string& message)
    : std::runtime_error(message), kind_(kind) {}

}  // namespace imap_oauth2_proxy

namespace iop::client {

using imap_oauth2_proxy::ErrorKind;

namespace {

// An application that set up its own spdlog logger keeps it. Otherwise the library logs to
// stderr like the command line, but a library is quieter: the config's default "info" (every
// refresh) becomes "warn"; "debug" and "trace" are kept for whoever asks for them.
void setup_library_logging(const app::Config& config) {
  static std::once_flag once;
  std::call_once(once, [&config] {
    const auto current = spdlog::default_logger();
    if (current && !current->name().empty()) {
      return;
    }
    const std::string level = config.log.level == "info" ? "warn" : config.log.level;
    if (auto r = setup_logging(level, config.log.format); !r) {
      spdlog::warn("imap-oauth2-proxy client: logging not set up: {}", r.error().message);
    }
  });
}

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<Context>> contexts;
};

// The contexts, destroyed at exit, when ~Context still writes the connection-log rows of the
// last connections (SQLite, OpenSSL's SHA-256, spdlog). Objects with static storage go away in
// the reverse order of their construction (and of atexit registrations): OpenSSL's cleanup and
// spdlog's registry are set up first, so that they go away after the contexts.
Registry& registry() {
  static const bool libraries_first = [] {
    OPENSSL_init_ssl(0, nullptr);
    return spdlog::default_logger() != nullptr;
  }();
  static Registry r;
  (void)libraries_first;
  return r;
}

}  // namespace

Context::~Context() {
  if (services) {
    services->http.join();
    services->blocking.join();
  }
}

ErrorKind error_kind(Errc code) {
  switch (code) {
    case Errc::invalid_argument:
    case Errc::not_found:
      return ErrorKind::not_found;
    case Errc::needs_reauth:
      return ErrorKind::needs_reauth;
    case Errc::endpoint_unavailable:
    case Errc::endpoint_bad_response:
      return ErrorKind::token_unavailable;
    case Errc::storage_unavailable:
    case Errc::credentials_corrupt:
    case Errc::key_error:
      return ErrorKind::storage;
    case Errc::config_error:
      return ErrorKind::config;
    case Errc::already_exists:
    case Errc::internal:
      return ErrorKind::internal;
  }
  return ErrorKind::internal;
}

void throw_error(ErrorKind kind, const std::string& message) {
  throw imap_oauth2_proxy::Error(kind, message);
}

std::shared_ptr<Context> context_for(const std::optional<std::filesystem::path>& config_file) {
  namespace fs = std::filesystem;
  auto located = app::locate_config(config_file);
  if (!located) {
    throw_error(ErrorKind::config, located.error().message);
  }
  std::string key;
  if (*located) {
    std::error_code ec;
    key = fs::weakly_canonical(**located, ec).string();
    if (ec) {
      key = fs::absolute(**located).string();
    }
  }
  auto& [mutex, contexts] = registry();
  std::lock_guard lock(mutex);
  if (auto it = contexts.find(key); it != contexts.end()) {
    return it->second;
  }
  auto config = app::load_effective_config(*located);
  if (!config) {
    throw_error(ErrorKind::config, config.error().message);
  }
  setup_library_logging(*config);
  for (const auto& warning : config->warnings) {
    spdlog::warn("{}", warning);
  }
  auto context = std::make_shared<Context>();
  context->settings = app::proxy_settings(*config);
  // The proxy's upstream side (app/serve.cpp): verified TLS, the config's CA file or the system
  // trust store.
  auto tls = certs::make_client_context(config->upstream.ca_file);
  if (!tls) {
    throw_error(ErrorKind::config, tls.error().message);
  }
  context->upstream_tls = std::move(*tls);
  auto services = app::make_services(std::move(*config), app::KeyPolicy::must_exist);
  if (!services) {
    throw_error(error_kind(services.error().code), services.error().message);
  }
  context->services = std::move(*services);
  contexts.emplace(key, context);
  return context;
}

net::any_io_executor setup_executor() {
  static net::thread_pool pool{1};
  return pool.get_executor();
}

}  // namespace iop::client
