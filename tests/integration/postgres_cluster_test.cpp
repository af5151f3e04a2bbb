// Two `serve` instances sharing one PostgreSQL database and one master key file, no Redis
// (issue #10), in front of a real Dovecot: each logs clients in, an expired account refreshes
// once whichever instance its logins reach, and killing the instance that holds the refresh
// lock delays the other only until the server drops the dead connection's lock.

#include <signal.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

std::string script(const char* name) {
  return std::string(IOP_SOURCE_DIR) + "/tests/peers/" + name;
}

struct Instance {
  fs::path home;
  fs::path config;
  int port = 0;
  Process proxy;
};

class PostgresClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = engine_unavailable(Engine::postgresql)) {
      GTEST_SKIP() << *why;
    }
    db_.emplace(Engine::postgresql, dir_.path());
    dovecot_ = std::make_unique<DovecotServer>(peer_.introspect_url(), "nobody@example.com",
                                               "unused-password");
    for (const char* name : {"one", "two"}) {
      Instance in;
      in.home = dir_.path() / name;
      fs::create_directories(in.home);
      in.port = free_port();
      ServeConfig c;
      c.tls_port = in.port;
      c.upstream_port = dovecot_->imaps_port();
      c.upstream_ca_file = dovecot_->ca_file();
      c.upstream_extra = "timeout = \"10s\"\n";
      c.token_url = peer_.token_url();
      c.more = "[storage]\ndatabase = \"" + db_->database() + "\"\npassword_file = \"" +
               db_->password_file().string() + "\"\nkey_file = \"" +
               (dir_.path() / "master.key").string() + "\"\n";
      in.config = write_serve_config(in.home, c);
      instances_.push_back(std::move(in));
    }
  }

  void start(Instance& in) {
    in.proxy = start_serve(in.config, in.home / "proxy.log");
    ASSERT_TRUE(poll_until([&] { return accepts_connections(in.port); }, 20s))
        << read_file(in.home / "proxy.log");
  }

  // An account added through instance one whose stored access token has expired: its next
  // login refreshes.
  void add_expired(const std::string& email) {
    const auto r =
        run_cli(instances_[0].config,
                {"account", "add", email, "--refresh-token-stdin", "--local-password-stdin"},
                peer_.add_account(email) + "\n" + local_password + "\n");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto store = db_->open_store(storage::MasterKey::load(dir_.path() / "master.key").value());
    ASSERT_TRUE(store.has_value()) << store.error().message;
    auto row = (*store)->get(email).value();
    row.token_expiry = 1;
    ASSERT_TRUE((*store)->upsert_account(row).has_value());
  }

  json client(const Instance& in, const std::string& user, std::vector<std::string> scenario,
              const std::string& password = local_password) {
    std::vector<std::string> argv{"python3",    script("imap_client.py"),
                                  "--port",     std::to_string(in.port),
                                  "--cafile",   (in.home / "certs/ca.crt").string(),
                                  "--user",     user,
                                  "--password", password};
    argv.insert(argv.end(), scenario.begin(), scenario.end());
    const auto r = run_command(argv, "", 120s);
    try {
      return json::parse(r.out);
    } catch (const std::exception&) {
      return json{{"ok", false}, {"error", "client output: " + r.out + r.err}};
    }
  }

  int refreshes_of(const std::string& email) {
    const auto stats = peer_.stats();
    return stats["per_account"].contains(email) ? stats["per_account"][email].get<int>() : 0;
  }

  static constexpr const char* local_password = "cluster-local-pass";
  TempDir dir_;
  std::optional<TestDatabase> db_;
  TokenEndpointPeer peer_;
  std::unique_ptr<DovecotServer> dovecot_;
  std::vector<Instance> instances_;
};

TEST_F(PostgresClusterTest, AnExpiredAccountRefreshesOnceWhicheverInstanceItsLoginsReach) {
  add_expired("dana@example.com");
  const int before = refreshes_of("dana@example.com");  // `account add` proves the token once
  start(instances_[0]);
  start(instances_[1]);
  peer_.configure({{"delay_ms", 300}});
  // Ten simultaneous logins on each instance: every one logs in upstream with the same token.
  json results[2];
  std::thread other([&] {
    results[1] = client(instances_[1], "dana@example.com", {"concurrent", "10"});
  });
  results[0] = client(instances_[0], "dana@example.com", {"concurrent", "10"});
  other.join();
  for (const auto& r : results) {
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["succeeded"].get<int>(), 10) << r.dump();
  }
  EXPECT_EQ(refreshes_of("dana@example.com") - before, 1)
      << read_file(instances_[0].home / "proxy.log") << read_file(instances_[1].home / "proxy.log");
}

TEST_F(PostgresClusterTest, KillingTheLockHolderMidRefreshDelaysTheOtherOnlyBriefly) {
  // Microsoft's behaviour: a refresh token stays valid after it was used, so a refresh the
  // killed instance started and never committed costs nothing.
  peer_.configure({{"rotation", "keep"}});
  add_expired("eve@example.com");
  start(instances_[0]);
  start(instances_[1]);
  // Instance one's refresh hangs at the endpoint; kill it there, holding the lock.
  peer_.add_faults(json::array({{{"kind", "delay"}, {"ms", 5000}}}), "eve@example.com");
  std::thread first([&] { (void)client(instances_[0], "eve@example.com", {"login"}); });
  const bool holding = wait_until([&] { return peer_.stats()["in_flight"].get<int>() == 1; }, 20s,
                                  "instance one's refresh at the endpoint");
  instances_[0].proxy.signal(SIGKILL);
  instances_[0].proxy.wait();
  first.join();
  ASSERT_TRUE(holding);

  // The server dropped the dead instance's connection and its lock: instance two refreshes now,
  // well inside its lock wait (10 s), not after it.
  const auto r = client(instances_[1], "eve@example.com", {"login"});
  ASSERT_TRUE(r["ok"].get<bool>()) << r.dump() << read_file(instances_[1].home / "proxy.log");
  const auto log = read_file(instances_[1].home / "proxy.log");
  EXPECT_EQ(log.find("refreshing without it"), std::string::npos) << log;

  auto store = db_->open_store(storage::MasterKey::load(dir_.path() / "master.key").value());
  ASSERT_TRUE(store.has_value());
  const auto row = (*store)->get("eve@example.com").value();
  EXPECT_TRUE(peer_.check(row.refresh_token.reveal())["valid"].get<bool>());
  EXPECT_EQ(row.status, storage::AccountStatus::active);
}

TEST_F(PostgresClusterTest, LoginsWithACachedTokenGoOnWhilePostgreSQLRestarts) {
  const std::string email = "finn@example.com";
  const auto r =
      run_cli(instances_[0].config,
              {"account", "add", email, "--refresh-token-stdin", "--local-password-stdin"},
              peer_.add_account(email) + "\n" + local_password + "\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  start(instances_[0]);
  // The first login reads the account and caches its token.
  const auto first = client(instances_[0], email, {"login"});
  ASSERT_TRUE(first["ok"].get<bool>()) << first.dump();

  db_->stop_server();
  const auto during = client(instances_[0], email, {"concurrent", "10"});
  db_->start_server();
  ASSERT_TRUE(during["ok"].get<bool>()) << during.dump();
  EXPECT_EQ(during["succeeded"].get<int>(), 10)
      << during.dump() << read_file(instances_[0].home / "proxy.log");
  const auto log = read_file(instances_[0].home / "proxy.log");
  EXPECT_NE(log.find("the database cannot be read; checking against the account as it was last "
                     "read"),
            std::string::npos)
      << log;

  // Back: the store connects again by itself. A password changed through the CLI is what the
  // next logins check, which only a read of the database can give.
  const auto changed = run_cli(instances_[1].config, {"account", "passwd", email},
                               std::string("a-new-local-pass\n"));
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_TRUE(wait_until(
      [&] { return client(instances_[0], email, {"login"}, "a-new-local-pass")["ok"].get<bool>(); },
      20s, "a login with the new password after the restart"))
      << read_file(instances_[0].home / "proxy.log");
  EXPECT_FALSE(client(instances_[0], email, {"login"})["ok"].get<bool>())
      << "the old password still works after the restart";
}

}  // namespace
}  // namespace iop::test
