#pragma once
// The credentials database of a test on either engine (issue #10): the same test runs against
// SQLite and against PostgreSQL, parameterised rather than copied. For PostgreSQL every
// TestDatabase is a new database on one server per test process (tests/support/postgres_server),
// started on first use.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "common/secret.hpp"
#include "storage/credentials_store.hpp"

namespace iop::test {

enum class Engine { sqlite, postgresql };

// "sqlite", "postgresql": the suffix of a parameterised test's name.
std::string to_string(Engine engine);

// Why `engine` cannot run here (the skip message), or nullopt.
std::optional<std::string> engine_unavailable(Engine engine);

class TestDatabase {
 public:
  // SQLite: `dir`/credentials.db. PostgreSQL: a new database on the shared server.
  TestDatabase(Engine engine, const std::filesystem::path& dir);

  [[nodiscard]] Engine engine() const { return engine_; }
  // What [storage] database says: the file path or the URL.
  [[nodiscard]] const std::string& database() const { return database_; }
  // The PostgreSQL password (empty for SQLite) and a file holding it.
  [[nodiscard]] const Secret& password() const { return password_; }
  [[nodiscard]] std::filesystem::path password_file() const;

  Result<std::unique_ptr<storage::CredentialsStore>> open_store(
      const storage::MasterKey& key) const;

  // Runs portable SQL on a connection of its own (outside any store); throws on failure.
  void exec(const std::string& sql) const;

  // While on, every UPDATE of mail_credentials fails ("simulated disk failure").
  void fail_updates(bool on) const;

  // PostgreSQL only: stops the server (immediate shutdown, every connection dropped) and starts
  // it again on the same port, as a restart under load.
  void stop_server() const;
  void start_server() const;

 private:
  Engine engine_;
  std::string database_;
  std::string pg_name_;
  Secret password_;
};

}  // namespace iop::test
