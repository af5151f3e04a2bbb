#include "tests/support/postgres_server.hpp"

#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>

namespace iop::test {

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char* superuser = "iop_admin";

// The newest /usr/lib/postgresql/<version>/bin that has both initdb and postgres.
std::optional<fs::path> server_bin() {
  std::optional<fs::path> best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const fs::path bin = entry.path() / "bin";
    if (!fs::exists(bin / "initdb") || !fs::exists(bin / "postgres")) {
      continue;
    }
    const int version = std::atoi(entry.path().filename().c_str());
    if (version > best_version) {
      best_version = version;
      best = bin;
    }
  }
  return best;
}

std::string random_hex(std::size_t bytes) {
  std::random_device rd;
  std::string out;
  constexpr char digits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto b = static_cast<unsigned>(rd()) & 0xFFu;
    out += digits[b >> 4];
    out += digits[b & 0xFu];
  }
  return out;
}

struct ConnFinish {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultClear {
  void operator()(PGresult* r) const { PQclear(r); }
};

// The superuser's connection over the cluster's Unix socket.
std::string admin_conninfo(const fs::path& socket_dir, int port, const std::string& db) {
  return "host=" + socket_dir.string() + " port=" + std::to_string(port) + " user=" + superuser +
         " dbname=" + db + " connect_timeout=5";
}

void ignore_notice(void* /*arg*/, const char* /*message*/) {}

std::string run_sql(const std::string& conninfo, const std::string& sql) {
  std::unique_ptr<PGconn, ConnFinish> conn(PQconnectdb(conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    throw std::runtime_error("cannot connect to the test PostgreSQL: " +
                             std::string(conn ? PQerrorMessage(conn.get()) : "out of memory"));
  }
  // "drop cascades to ..." and the like are not test output.
  PQsetNoticeProcessor(conn.get(), ignore_notice, nullptr);
  std::unique_ptr<PGresult, ResultClear> result(PQexec(conn.get(), sql.c_str()));
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error("test PostgreSQL: " + sql + ": " + PQresultErrorMessage(result.get()));
  }
  if (status == PGRES_TUPLES_OK && PQntuples(result.get()) > 0 && PQnfields(result.get()) > 0) {
    return PQgetvalue(result.get(), 0, 0);
  }
  return {};
}

}  // namespace

std::optional<std::string> PostgresServer::unavailable() {
  if (!server_bin()) {
    return "the PostgreSQL server binaries (initdb, postgres) are not installed: apt-get install "
           "postgresql (scripts/install-deps.sh does)";
  }
  if (::geteuid() == 0 && ::getpwnam("postgres") == nullptr) {
    return "running as root and there is no `postgres` user to run the server as (the "
           "postgresql package creates it)";
  }
  return std::nullopt;
}

PostgresServer::PostgresServer() : password_(random_hex(16)) {
  if (auto why = unavailable()) {
    throw std::runtime_error(*why);
  }
  bin_ = server_bin()->string();
  // The cluster's own folder (data and socket) belongs to the server's user; the log and the
  // password file stay in ours.
  fs::create_directory(cluster());
  fs::permissions(cluster(), fs::perms::owner_all);
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam("postgres");
    fs::permissions(dir_.path(),
                    fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
    if (::chown(cluster().c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      throw std::runtime_error("cannot give the test PostgreSQL folder to the postgres user");
    }
  }
  const auto init = run_command(
      as_server_user({bin_ + "/initdb", "-D", (cluster() / "data").string(), "-U", superuser, "-A",
                      "trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "-N"}));
  if (init.exit_code != 0) {
    throw std::runtime_error("initdb failed: " + init.err + init.out);
  }
  std::string last_error;
  for (int attempt = 0; attempt < 3; ++attempt) {
    port_ = free_port();
    try {
      start();
      last_error.clear();
      break;
    } catch (const std::runtime_error& e) {
      last_error = e.what();
      stop();
    }
  }
  if (!last_error.empty()) {
    throw std::runtime_error(last_error);
  }
  const std::string admin = admin_conninfo(cluster(), port_, "postgres");
  run_sql(admin, "CREATE ROLE iop LOGIN PASSWORD '" + password_ + "'");
  run_sql(admin, "CREATE DATABASE iop OWNER iop");
  std::ofstream(password_file()) << password_ << '\n';
  fs::permissions(password_file(), fs::perms::owner_read | fs::perms::owner_write);
}

PostgresServer::~PostgresServer() { stop(); }

std::vector<std::string> PostgresServer::as_server_user(std::vector<std::string> argv) const {
  if (::geteuid() != 0) {
    return argv;
  }
  std::vector<std::string> out = {"setpriv", "--reuid=postgres", "--regid=postgres",
                                  "--clear-groups"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::string PostgresServer::url(const std::string& db) const {
  return "postgresql://iop@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::filesystem::path PostgresServer::password_file() const { return dir_.path() / "password"; }

std::filesystem::path PostgresServer::cluster() const { return dir_.path() / "cluster"; }

void PostgresServer::stop() {
  if (!process_.running()) {
    return;
  }
  // Immediate shutdown: the postmaster ends every backend at once and leaves (SIGKILL would
  // leave the backends holding the shared memory, and the next start would refuse).
  process_.signal(SIGQUIT);
  if (!process_.wait(30s)) {
    process_.kill_and_wait();
  }
}

void PostgresServer::start() {
  if (process_.running()) {
    return;
  }
  // fsync off: the tests crash proxies, not this server, and it makes initdb-to-ready fast.
  process_ =
      Process::start(as_server_user({bin_ + "/postgres", "-D", (cluster() / "data").string(), "-p",
                                     std::to_string(port_), "-k", cluster().string(), "-c",
                                     "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                                     "max_connections=400", "-c", "shared_buffers=32MB"}),
                     dir_.path() / "postgres.log");
  const std::string ping = admin_conninfo(cluster(), port_, "postgres");
  const auto started = wait_for_start(
      process_, [&] { return PQping(ping.c_str()) == PQPING_OK; }, 30s);
  if (started != StartUp::ready) {
    throw std::runtime_error(
        std::string("the test PostgreSQL ") +
        (started == StartUp::exited ? "exited at startup" : "did not answer in 30 s") +
        "; its log:\n" + read_file(dir_.path() / "postgres.log"));
  }
}

std::string PostgresServer::query(const std::string& sql, const std::string& db) {
  return run_sql(admin_conninfo(cluster(), port_, db), sql);
}

std::string PostgresServer::create_database() {
  static std::atomic<int> counter{0};
  const std::string name = "t" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
  query("CREATE DATABASE " + name + " OWNER iop", "postgres");
  return name;
}

}  // namespace iop::test
