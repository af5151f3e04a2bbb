// `imap-oauth2-proxy doctor` as the built binary (issue #6 §4): a healthy setup against real
// peers (Dovecot with a test CA, the test token endpoint, redis-server) passes with exit 0, and
// each broken setup fails naming the check that found it.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "certs/local_cert.hpp"
#include "common/secret.hpp"
#include "storage/audit_log.hpp"
#include "storage/credentials_store.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string alice = "alice@example.com";
const std::string client_secret = "doctor-test-client-secret";

struct DoctorSetup {
  std::string redis_url;
  bool trust_upstream_ca = true;
  bool with_client_secret = false;
  int listen_port = 0;
};

// One `ok    name   detail` line per check: name -> status, from the text report.
std::map<std::string, std::string> statuses_from_text(const std::string& out) {
  std::map<std::string, std::string> statuses;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    const auto status = line.substr(0, line.find(' '));
    if (status != "ok" && status != "warn" && status != "fail") {
      continue;  // a fix line or the summary
    }
    // The name runs from column 6 to the first run of two spaces.
    const auto rest = line.substr(6);
    statuses[rest.substr(0, rest.find("  "))] = status;
  }
  return statuses;
}

// The line of the check called `name` (the status, name and detail), or "".
std::string line_of(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > 6 && line.compare(6, name.size() + 1, name + " ") == 0) {
      return line;
    }
  }
  return {};
}

// The line after the check called `name`, when it is that check's fix ("" otherwise).
std::string fix_of(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > 6 && line.compare(6, name.size() + 1, name + " ") == 0) {
      std::string next;
      if (std::getline(in, next) && next.starts_with("      fix: ")) {
        return next.substr(11);
      }
      return {};
    }
  }
  return {};
}

class DoctorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    peer_ = new TokenEndpointPeer();
    dovecot_ = new DovecotServer(peer_->introspect_url(), "pat@example.com", "pat-pass");
    redis_ = new RedisServer();
  }
  static void TearDownTestSuite() {
    delete redis_;
    delete dovecot_;
    delete peer_;
  }

  void SetUp() override {
    setup_.redis_url = redis_->url();
    setup_.listen_port = free_port();
    write_config();
    // The state `init` plus `account add` leave: a key, a database with one OAuth account
    // holding tokens the endpoint issued, and the local certificate.
    auto key = storage::MasterKey::create(dir_.path() / "data/master.key").value();
    auto store =
        storage::CredentialsStore::open(dir_.path() / "data/credentials.db", std::move(key))
            .value();
    storage::Credentials row;
    row.email = alice;
    row.refresh_token = Secret(peer_->add_account(alice));
    row.access_token = Secret(std::string_view("at.doctor-test"));
    const auto now = std::chrono::system_clock::now();
    row.token_expiry =
        std::chrono::duration_cast<std::chrono::seconds>((now + 1h).time_since_epoch()).count();
    row.refreshed_at_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    ASSERT_TRUE(store->upsert_account(row).has_value());
    ASSERT_TRUE(
        certs::ensure_server_certificate(cert(), dir_.path() / "certs/server.key").has_value());
  }

  fs::path config() const { return dir_.path() / "imap-oauth2-proxy.toml"; }
  fs::path cert() const { return dir_.path() / "certs/server.crt"; }

  void write_config() {
    write_serve_config(
        dir_.path(),
        {.tls_port = setup_.listen_port,
         .server_extra = "certificate = \"certs/server.crt\"\n"
                         "private_key = \"certs/server.key\"\n",
         .upstream_host = "127.0.0.1",
         .upstream_port = dovecot_->imaps_port(),
         .upstream_ca_file = setup_.trust_upstream_ca ? dovecot_->ca_file() : fs::path(),
         .upstream_extra = "timeout = \"10s\"\n",
         .token_url = peer_->token_url(),
         .oauth_extra = setup_.with_client_secret ? "client_secret = \"" + client_secret + "\"\n"
                                                  : std::string(),
         .redis_url = setup_.redis_url,
         .redis_extra = "timeout = \"1s\"\n",
         .more = "[storage]\n"
                 "database = \"data/credentials.db\"\n"
                 "key_file = \"data/master.key\"\n"});
    fs::permissions(config(), fs::perms::owner_read | fs::perms::owner_write);
  }

  CommandResult doctor(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"doctor"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_cli(config(), args);
  }

  // Runs doctor, expects exit 1 and a fail line for `name` whose detail holds `detail_part`.
  CommandResult expect_fail(const std::string& name, const std::string& detail_part) {
    auto r = doctor();
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    const auto line = line_of(r.out, name);
    EXPECT_TRUE(line.starts_with("fail  ")) << "check " << name << " in:\n" << r.out;
    EXPECT_NE(line.find(detail_part), std::string::npos) << line;
    EXPECT_FALSE(fix_of(r.out, name).empty()) << "a fail names its fix:\n" << r.out;
    return r;
  }

  static TokenEndpointPeer* peer_;
  static DovecotServer* dovecot_;
  static RedisServer* redis_;
  TempDir dir_;
  DoctorSetup setup_;
};

TokenEndpointPeer* DoctorTest::peer_ = nullptr;
DovecotServer* DoctorTest::dovecot_ = nullptr;
RedisServer* DoctorTest::redis_ = nullptr;

TEST_F(DoctorTest, AHealthySetupPassesEveryCheck) {
  const auto r = doctor();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto statuses = statuses_from_text(r.out);
  for (const auto& name :
       {std::string("config"), std::string("config permissions"), std::string("master key"),
        std::string("database"), std::string("connection log"), std::string("redis"),
        std::string("token endpoint default"),
        "upstream 127.0.0.1:" + std::to_string(dovecot_->imaps_port()),
        std::string("server certificate"), "listen 127.0.0.1:" + std::to_string(setup_.listen_port),
        "account " + alice}) {
    ASSERT_TRUE(statuses.contains(name)) << name << " missing from:\n" << r.out;
    EXPECT_EQ(statuses.at(name), "ok") << name << " in:\n" << r.out;
  }
  for (const auto& [name, status] : statuses) {
    EXPECT_NE(status, "fail") << name;
  }
  EXPECT_NE(line_of(r.out, "upstream 127.0.0.1:" + std::to_string(dovecot_->imaps_port()))
                .find("AUTH=XOAUTH2"),
            std::string::npos)
      << r.out;
  EXPECT_NE(line_of(r.out, "server certificate")
                .find("clients must trust " + (dir_.path() / "certs/ca.crt").string()),
            std::string::npos)
      << r.out;
  const auto account = line_of(r.out, "account " + alice);
  EXPECT_NE(account.find("access token expires"), std::string::npos) << account;
  EXPECT_NE(account.find("keepalive due"), std::string::npos) << account;
  EXPECT_EQ(r.out.find("at.doctor-test"), std::string::npos) << "no token in the report";
}

TEST_F(DoctorTest, JsonHasTheSameChecksAndStatusesAsText) {
  setup_.redis_url = "redis://127.0.0.1:" + std::to_string(free_port());
  write_config();
  const auto text = doctor();
  const auto r = doctor({"--format", "json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_FALSE(j["ok"].get<bool>());
  std::map<std::string, std::string> from_json;
  for (const auto& c : j["checks"]) {
    from_json[c["name"].get<std::string>()] = c["status"].get<std::string>();
    if (c["status"] == "fail") {
      EXPECT_FALSE(c["fix"].get<std::string>().empty()) << c.dump();
    }
  }
  EXPECT_EQ(from_json, statuses_from_text(text.out));
  EXPECT_EQ(from_json["redis"], "fail");
}

TEST_F(DoctorTest, AWrongMasterKeyFailsTheKeyCheck) {
  const auto key_path = dir_.path() / "data/master.key";
  fs::remove(key_path);
  ASSERT_TRUE(storage::MasterKey::create(key_path).has_value());  // another random key
  expect_fail("master key", "does not decrypt the key check");
}

// A connection log changed outside the program refuses new rows; doctor says so before serve
// queues them for nothing.
TEST_F(DoctorTest, AConnectionLogThatDoesNotVerifyFails) {
  const auto db = (dir_.path() / "data/credentials.db").string();
  {
    auto key = storage::MasterKey::load(dir_.path() / "data/master.key").value();
    auto log = storage::AuditLog::open(db, key).value();
    ASSERT_TRUE(
        log->append(storage::event_record(storage::AuditEvent::passwd_changed, alice, "", 1)));
  }
  // Edited as someone without the key would.
  const auto r = run_command({"sqlite3", db,
                              "DROP TRIGGER IF EXISTS connection_log_no_update; UPDATE "
                              "connection_log SET account = 'mallory@example.com' WHERE id = 1;"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_fail("connection log", "BROKEN at row 1");
}

TEST_F(DoctorTest, RedisConfiguredButDownFailsTheRedisCheck) {
  setup_.redis_url = "redis://127.0.0.1:" + std::to_string(free_port());
  write_config();
  const auto r = expect_fail("redis", "unreachable");
  EXPECT_EQ(statuses_from_text(r.out)["database"], "ok") << "the other checks still run";
}

TEST_F(DoctorTest, AnUntrustedUpstreamCertificateFailsTheUpstreamCheck) {
  setup_.trust_upstream_ca = false;  // the system store does not know Dovecot's test CA
  write_config();
  const auto name = "upstream 127.0.0.1:" + std::to_string(dovecot_->imaps_port());
  const auto r = expect_fail(name, "certificate verification failed");
  EXPECT_NE(fix_of(r.out, name).find("[upstream] ca_file"), std::string::npos) << r.out;
}

TEST_F(DoctorTest, AnExpiredServerCertificateFailsTheCertificateCheck) {
  fs::remove_all(dir_.path() / "certs");
  certs::CertificateOptions past;
  past.now = std::chrono::system_clock::now() - std::chrono::days(800);  // valid for 730 days
  ASSERT_TRUE(
      certs::ensure_server_certificate(cert(), dir_.path() / "certs/server.key", past).has_value());
  expect_fail("server certificate", "expired");
}

TEST_F(DoctorTest, AWorldReadableConfigHoldingASecretFailsUntilChmod600) {
  setup_.with_client_secret = true;
  write_config();
  fs::permissions(config(), fs::perms::group_read | fs::perms::others_read, fs::perm_options::add);
  const auto r = expect_fail("config permissions", "other users can read it");
  EXPECT_EQ(fix_of(r.out, "config permissions"), "chmod 600 " + config().string());
  EXPECT_EQ(r.out.find(client_secret), std::string::npos) << "the secret is never printed";
  EXPECT_EQ(r.err.find(client_secret), std::string::npos);

  ASSERT_EQ(::chmod(config().c_str(), 0600), 0);
  const auto fixed = doctor();
  EXPECT_EQ(fixed.exit_code, 0) << fixed.out << fixed.err;
  EXPECT_EQ(statuses_from_text(fixed.out)["config permissions"], "ok") << fixed.out;
}

TEST_F(DoctorTest, AnAccountThatNeedsReauthorizationNamesTheCommand) {
  {
    auto store = open_cli_store(dir_.path()).value();
    ASSERT_TRUE(store->mark_needs_reauth(alice, "AADSTS700082: expired").has_value());
  }
  const auto r = expect_fail("account " + alice, "needs_reauth");
  EXPECT_EQ(fix_of(r.out, "account " + alice), "imap-oauth2-proxy account reauth " + alice);
}

TEST_F(DoctorTest, AMissingDatabaseIsAFailAndDoctorCreatesNothing) {
  fs::remove_all(dir_.path() / "data");
  const auto r = expect_fail("database", "does not exist");
  EXPECT_NE(fix_of(r.out, "database").find("imap-oauth2-proxy init"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_.path() / "data/credentials.db"));
  EXPECT_FALSE(fs::exists(dir_.path() / "data/master.key"));
}

TEST_F(DoctorTest, AListenPortHeldByAnotherProgramFails) {
  // Another program: accepts and hangs up without an IMAP greeting of ours.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(setup_.listen_port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  std::atomic<bool> stop{false};
  std::thread other([fd, &stop] {
    while (!stop) {
      const int c = ::accept(fd, nullptr, nullptr);
      if (c >= 0) {
        ::close(c);
      }
    }
  });
  expect_fail("listen 127.0.0.1:" + std::to_string(setup_.listen_port),
              "in use by another program");
  stop = true;
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  other.join();
}

TEST_F(DoctorTest, AListenPortHeldByARunningProxyIsOurs) {
  auto proxy = start_serve(config(), dir_.path() / "serve.log");
  // Wait (bounded) until `serve` accepts connections, as the proxy tests do.
  const bool listening =
      wait_until([this] { return accepts_connections(setup_.listen_port); }, 10s,
                 "serve listening on port " + std::to_string(setup_.listen_port));
  ASSERT_TRUE(listening) << "serve did not start listening";
  const auto r = doctor();
  const auto line = line_of(r.out, "listen 127.0.0.1:" + std::to_string(setup_.listen_port));
  EXPECT_TRUE(line.starts_with("ok    ")) << r.out;
  EXPECT_NE(line.find("in use by a running imap-oauth2-proxy"), std::string::npos) << r.out;
  proxy.kill_and_wait();
}

}  // namespace
}  // namespace iop::test
