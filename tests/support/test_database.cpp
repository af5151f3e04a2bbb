#include "tests/support/test_database.hpp"

#include <memory>
#include <mutex>
#include <stdexcept>

#include "tests/support/postgres_server.hpp"
#include "tests/support/raw_db.hpp"

namespace iop::test {

namespace {

// One server per test process, started on first use and stopped at exit.
PostgresServer& shared_postgres() {
  static std::once_flag once;
  static std::unique_ptr<PostgresServer> server;
  std::call_once(once, [] { server = std::make_unique<PostgresServer>(); });
  return *server;
}

}  // namespace

std::string to_string(Engine engine) { return engine == Engine::sqlite ? "sqlite" : "postgresql"; }

std::optional<std::string> engine_unavailable(Engine engine) {
  return engine == Engine::sqlite ? std::nullopt : PostgresServer::unavailable();
}

TestDatabase::TestDatabase(Engine engine, const std::filesystem::path& dir) : engine_(engine) {
  if (engine == Engine::sqlite) {
    database_ = (dir / "credentials.db").string();
    return;
  }
  PostgresServer& server = shared_postgres();
  pg_name_ = server.create_database();
  database_ = server.url(pg_name_);
  password_ = Secret(server.password());
}

std::filesystem::path TestDatabase::password_file() const {
  return shared_postgres().password_file();
}

Result<std::unique_ptr<storage::CredentialsStore>> TestDatabase::open_store(
    const storage::MasterKey& key) const {
  return storage::CredentialsStore::open(database_, password_, key);
}

void TestDatabase::exec(const std::string& sql) const {
  if (engine_ == Engine::sqlite) {
    RawDb db(database_);
    if (const auto error = db.try_exec(sql); !error.empty()) {
      throw std::runtime_error("SQLite: " + sql + ": " + error);
    }
  } else {
    shared_postgres().query(sql, pg_name_);
  }
}

void TestDatabase::fail_updates(bool on) const {
  if (engine_ == Engine::sqlite) {
    exec(on ? "CREATE TRIGGER fail_updates BEFORE UPDATE ON mail_credentials BEGIN "
              "SELECT RAISE(ABORT, 'simulated disk failure'); END;"
            : "DROP TRIGGER fail_updates;");
    return;
  }
  exec(on ? "CREATE OR REPLACE FUNCTION fail_updates() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'simulated disk failure'; END $$; "
            "CREATE TRIGGER fail_updates BEFORE UPDATE ON mail_credentials "
            "FOR EACH ROW EXECUTE FUNCTION fail_updates();"
          : "DROP TRIGGER fail_updates ON mail_credentials;");
}

void TestDatabase::stop_server() const { shared_postgres().stop(); }

void TestDatabase::start_server() const { shared_postgres().start(); }

}  // namespace iop::test
