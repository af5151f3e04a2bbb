#pragma once
// Running the built imap-oauth2-proxy binary against a config in a temporary folder.

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "storage/credentials_store.hpp"
#include "tests/support/process.hpp"

namespace iop::test {

inline std::string binary_path() {
  if (const char* b = std::getenv("IOP_BINARY")) return b;
  return std::string(IOP_BINARY_DIR) + "/app/imap-oauth2-proxy";
}

struct CliConfig {
  std::string token_url;
  std::string redis_url;    // empty: no Redis
  std::string extra_oauth;  // more lines for [oauth]
  std::string extra_redis;  // more lines for [redis]
  // [storage] database: a path (relative to dir) or a PostgreSQL URL (TestDatabase::database).
  std::string database = "data/credentials.db";
  std::string password_file;  // [storage] password_file; empty: not written
};

// Writes dir/imap-oauth2-proxy.toml and returns its path.
inline std::filesystem::path write_cli_config(const std::filesystem::path& dir,
                                              const CliConfig& c) {
  const auto path = dir / "imap-oauth2-proxy.toml";
  std::ofstream out(path);
  out << "[oauth]\n"
      << "token_endpoint = \"" << c.token_url << "\"\n"
      << "client_id = \"test-client\"\n"
      << "http_timeout = \"5s\"\n"
      << c.extra_oauth << "\n"
      << "[storage]\n"
      << "database = \"" << c.database << "\"\n"
      << "key_file = \"data/master.key\"\n";
  if (!c.password_file.empty()) {
    out << "password_file = \"" << c.password_file << "\"\n";
  }
  out << "[redis]\n"
      << "url = \"" << c.redis_url << "\"\n"
      << "key_prefix = \"cli:\"\n"
      << c.extra_redis << "\n";
  return path;
}

// A config for `serve` against test peers: what the proxy, onboarding and doctor tests used to
// write each on its own. Sections are written in this order; the *_extra strings are more lines
// for their section (each ending in a newline).
struct ServeConfig {
  int tls_port = 0;       // listen_tls = "127.0.0.1:N"; 0: listen_tls = "" (off)
  int starttls_port = 0;  // listen_starttls = "127.0.0.1:N"; 0: not written (the default)
  std::string server_extra;
  std::string upstream_host = "localhost";
  int upstream_port = 1;
  std::filesystem::path upstream_ca_file;  // empty: not written
  std::string upstream_extra;
  std::string token_url;  // client_id "test-client", http_timeout 5s
  std::string oauth_extra;
  std::string redis_url;  // empty: no [redis] section
  std::string redis_extra;
  std::string log_level;  // empty: no [log] section
  std::string more;       // whole sections after the others
};

// Writes dir/imap-oauth2-proxy.toml from `c` and returns its path.
inline std::filesystem::path write_serve_config(const std::filesystem::path& dir,
                                                const ServeConfig& c) {
  const auto path = dir / "imap-oauth2-proxy.toml";
  std::ofstream out(path, std::ios::trunc);
  out << "[server]\n"
      << "listen_tls = \""
      << (c.tls_port != 0 ? "127.0.0.1:" + std::to_string(c.tls_port) : std::string()) << "\"\n";
  if (c.starttls_port != 0) {
    out << "listen_starttls = \"127.0.0.1:" << c.starttls_port << "\"\n";
  }
  out << c.server_extra << "[upstream]\n"
      << "host = \"" << c.upstream_host << "\"\n"
      << "port = " << c.upstream_port << "\n";
  if (!c.upstream_ca_file.empty()) {
    out << "ca_file = \"" << c.upstream_ca_file.string() << "\"\n";
  }
  out << c.upstream_extra << "[oauth]\n"
      << "token_endpoint = \"" << c.token_url << "\"\n"
      << "client_id = \"test-client\"\n"
      << "http_timeout = \"5s\"\n"
      << c.oauth_extra;
  if (!c.redis_url.empty()) {
    out << "[redis]\n"
        << "url = \"" << c.redis_url << "\"\n"
        << c.redis_extra;
  }
  if (!c.log_level.empty()) {
    out << "[log]\nlevel = \"" << c.log_level << "\"\n";
  }
  out << c.more;
  return path;
}

// Runs the binary with `args` followed by --config `config`.
inline CommandResult run_cli(const std::filesystem::path& config, std::vector<std::string> args,
                             const std::string& stdin_data = {}) {
  std::vector<std::string> argv{binary_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--config");
  argv.push_back(config.string());
  return run_command(argv, stdin_data);
}

// `serve` with `config`, in the background, stdout and stderr in `log`. Wait for it with
// wait_until / poll_until (accepts_connections on one of its ports, or a line in `log`).
inline Process start_serve(const std::filesystem::path& config, const std::filesystem::path& log) {
  return Process::start({binary_path(), "serve", "--config", config.string()}, log);
}

// The credentials database that `init` / `account add` made under `dir` (the layout
// write_cli_config and the other test configs use: data/master.key, data/credentials.db),
// opened with its key as a restarted process would.
inline Result<std::unique_ptr<storage::CredentialsStore>> open_cli_store(
    const std::filesystem::path& dir) {
  auto key = storage::MasterKey::load(dir / "data/master.key");
  if (!key) {
    return std::unexpected(key.error());
  }
  return storage::CredentialsStore::open(dir / "data/credentials.db", std::move(*key));
}

}  // namespace iop::test
