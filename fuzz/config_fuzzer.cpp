// libFuzzer target for the configuration parser (STYLE.md §3.10): arbitrary TOML text goes into
// app::parse_config, the function `load_config` and `init`'s checks use. Besides the sanitizers
// (and the abort an uncaught toml++ or std exception would cause), it checks:
// - an error is Errc::config_error with a message (the operator's next step), never empty;
// - an accepted config has the "default" provider profile, absolute paths wherever a path is
//   set (relative ones resolve against the base folder; `database` and `connection_log` may
//   instead be a PostgreSQL URL, kept as written, and a log URL is the database's own), and
//   ports within 1..65535;
// - parsing is deterministic: the same text parses the same way twice.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "app/config.hpp"
#include "common/database_url.hpp"
#include "fuzz/require.hpp"

namespace {

using namespace iop;

using iop::fuzz::require;

void require_absolute(const std::filesystem::path& p) { require(p.empty() || p.is_absolute()); }

// A database location: an absolute SQLite path or a PostgreSQL URL (issue #10).
void require_database(const std::filesystem::path& p) {
  require(is_postgres_url(p.native()) || p.is_absolute());
}

void require_port(int port) { require(port >= 1 && port <= 65535); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::filesystem::path base = "/nonexistent/fuzz";
  auto config = app::parse_config(text, base, "fuzz.toml");
  auto again = app::parse_config(text, base, "fuzz.toml");
  require(config.has_value() == again.has_value());
  if (!config) {
    require(config.error().code == Errc::config_error);
    require(!config.error().message.empty());
    require(config.error().message == again.error().message);
    return 0;
  }
  const app::Config& c = *config;
  require(c.provider("default").has_value());
  if (c.server.listen_tls) {
    require_port(c.server.listen_tls->port);
  }
  if (c.server.listen_starttls) {
    require_port(c.server.listen_starttls->port);
  }
  require_port(c.upstream.port);
  require_absolute(c.server.certificate);
  require_absolute(c.server.private_key);
  require_absolute(c.upstream.ca_file);
  require_absolute(c.oauth.ca_file);
  require_database(c.storage.database);
  require_database(c.storage.connection_log);
  if (is_postgres_url(c.storage.connection_log.native())) {
    require(c.storage.connection_log == c.storage.database);
  }
  if (!c.storage.postgres()) {
    require(c.storage.password_file.empty());
    require(c.storage.connection_log == c.storage.database);
  }
  require_absolute(c.storage.password_file);
  require_absolute(c.storage.key_file);
  return 0;
}
