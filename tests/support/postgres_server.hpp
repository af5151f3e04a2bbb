#pragma once
// A real PostgreSQL server for integration tests (issue #10): its own cluster made by initdb in
// a temporary folder, on a free loopback port, with its socket in that folder too; stopped at
// destruction. Debian's `postgresql` package provides the binaries
// (/usr/lib/postgresql/<version>/bin). PostgreSQL refuses to run as root, so under root the
// server runs as the package's `postgres` user (setpriv), with the folder given to it.
//
// The cluster has one role, `iop`, with a password (scram-sha-256 over TCP), and one database,
// `iop`, owned by it: the proxy connects the way it would to a real server.
//
// stop() is an immediate shutdown (SIGQUIT: every backend ends at once, no checkpoint, as in a
// crash); start() brings the same cluster back on the same port.

#include <optional>
#include <string>

#include "tests/support/process.hpp"

namespace iop::test {

class PostgresServer {
 public:
  // Why the server cannot be started on this machine (its binaries are absent), or nullopt.
  // Tests skip with this message; scripts/install-deps.sh installs them, so CI never skips.
  static std::optional<std::string> unavailable();

  // initdb, start, CREATE DATABASE. Throws std::runtime_error with the server's log when it
  // does not come up.
  PostgresServer();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // postgresql://iop@127.0.0.1:PORT/DB (no password: see password()/password_file()).
  [[nodiscard]] std::string url(const std::string& db = "iop") const;
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] const std::string& password() const { return password_; }
  // A file holding password() (mode 0600), for [storage] password_file.
  [[nodiscard]] std::filesystem::path password_file() const;

  void stop();
  void start();
  [[nodiscard]] bool running() { return process_.running(); }

  // Runs `sql` as the superuser on database `db` and returns the first column of the first row
  // ("" when none). Throws std::runtime_error on failure.
  std::string query(const std::string& sql, const std::string& db = "iop");

  // A new empty database owned by `iop`, for one test; returns its name.
  std::string create_database();

 private:
  std::vector<std::string> as_server_user(std::vector<std::string> argv) const;
  [[nodiscard]] std::filesystem::path cluster() const;

  TempDir dir_;
  std::string bin_;
  std::string password_;
  int port_ = 0;
  Process process_;
};

}  // namespace iop::test
