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
      << "database = \"data/credentials.db\"\n"
      << "key_file = \"data/master.key\"\n"
      << "[redis]\n"
      << "url = \"" << c.redis_url << "\"\n"
      << "key_prefix = \"cli:\"\n"
      << c.extra_redis << "\n";
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
