// `serve` instances sharing one PostgreSQL database and one master key file (issue #10), with
// and without Redis, in front of a real Dovecot: each logs clients in, an expired account
// refreshes once whichever instance its logins reach (300 logins over three instances, with
// Redis running and with Redis stopped), killing the instance that holds the refresh lock
// delays the others only until the server drops the dead connection's lock, a PostgreSQL
// restart during 1,000 logins fails none of them, and the connection log the three instances
// wrote at once is one chain that verifies.

#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "storage/audit_log.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/redis_server.hpp"
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
  }

  // `n` instances on the database; with `redis`, sharing the test's Redis too.
  void make_instances(int n, bool redis = false) {
    for (int i = 0; i < n; ++i) {
      Instance in;
      in.home = dir_.path() / ("instance-" + std::to_string(i));
      fs::create_directories(in.home);
      in.port = free_port();
      ServeConfig c;
      c.tls_port = in.port;
      c.upstream_port = dovecot_->imaps_port();
      c.upstream_ca_file = dovecot_->ca_file();
      c.upstream_extra = "timeout = \"10s\"\n";
      c.token_url = peer_.token_url();
      if (redis) {
        c.redis_url = redis_.url();
      }
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

  // Runs `client` on every instance at once, each `concurrent` logins; returns how many
  // succeeded, and the failures' reports in `errors`.
  int logins_everywhere(const std::string& email, int concurrent, std::string& errors) {
    std::vector<json> results(instances_.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < instances_.size(); ++i) {
      threads.emplace_back([&, i] {
        results[i] = client(instances_[i], email, {"concurrent", std::to_string(concurrent)});
      });
    }
    for (auto& t : threads) {
      t.join();
    }
    int succeeded = 0;
    for (const auto& r : results) {
      succeeded += r.value("succeeded", 0);
      if (r.value("succeeded", 0) != concurrent) {
        errors += r.dump() + "\n";
      }
    }
    return succeeded;
  }

  std::unique_ptr<storage::AuditLog> open_log() {
    auto log = storage::AuditLog::open_for_verifying(
        db_->database(), db_->password(),
        storage::MasterKey::load(dir_.path() / "master.key").value());
    EXPECT_TRUE(log.has_value()) << log.error().message;
    return log ? std::move(*log) : nullptr;
  }

  // The connection rows of `email` in the shared log, once `expected` have arrived (each
  // instance's writer commits its rows shortly after the sessions end, or after an outage).
  std::size_t wait_for_connection_rows(const std::string& email, std::size_t expected) {
    auto log = open_log();
    storage::AuditQuery query;
    query.account = email;
    query.event = "connection";
    std::size_t found = 0;
    wait_until(
        [&] {
          auto rows = log->query(query);
          found = rows ? rows->size() : 0;
          return found >= expected;
        },
        60s, "the connection rows in the shared log");
    return found;
  }

  std::string logs() {
    std::string out;
    for (const auto& in : instances_) {
      out += "---- " + in.home.filename().string() + " ----\n" + read_file(in.home / "proxy.log");
    }
    return out;
  }

  int refreshes_of(const std::string& email) {
    const auto stats = peer_.stats();
    return stats["per_account"].contains(email) ? stats["per_account"][email].get<int>() : 0;
  }

  static constexpr const char* local_password = "cluster-local-pass";
  TempDir dir_;
  std::optional<TestDatabase> db_;
  TokenEndpointPeer peer_;
  RedisServer redis_;
  std::unique_ptr<DovecotServer> dovecot_;
  std::vector<Instance> instances_;
};

TEST_F(PostgresClusterTest, AnExpiredAccountRefreshesOnceWhicheverInstanceItsLoginsReach) {
  make_instances(2);
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
  make_instances(2);
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

// The scale: 300 simultaneous logins of one expired account, 100 on each of three
// instances, with Redis running (its lock) and with Redis stopped (the database's lock).
class PostgresClusterRedisTest : public PostgresClusterTest,
                                 public ::testing::WithParamInterface<bool> {};

TEST_P(PostgresClusterRedisTest, ThreeHundredLoginsOverThreeInstancesRefreshOnce) {
  const bool redis_running = GetParam();
  const std::string email = "gina@example.com";
  make_instances(3, true);
  add_expired(email);
  redis_.flushall();  // the add may have cached the token it proved
  const int before = refreshes_of(email);
  for (auto& in : instances_) {
    start(in);
  }
  if (!redis_running) {
    redis_.stop();
  }
  peer_.configure({{"delay_ms", 300}});  // a refresh long enough for every login to want one

  std::string errors;
  EXPECT_EQ(logins_everywhere(email, 100, errors), 300) << errors << logs();
  EXPECT_EQ(refreshes_of(email) - before, 1) << logs();

  // The three instances' writers appended to one chain at the same time: every connection is
  // in it once, and it verifies.
  EXPECT_EQ(wait_for_connection_rows(email, 300), 300u) << logs();
  const auto report = open_log()->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message;
  EXPECT_TRUE(report->intact) << report->reason;
  const auto verified = run_cli(instances_[2].config, {"audit", "--verify"});
  EXPECT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_NE(verified.out.find("audit log intact"), std::string::npos) << verified.out;
}

INSTANTIATE_TEST_SUITE_P(Redis, PostgresClusterRedisTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "running" : "stopped"; });

TEST_F(PostgresClusterTest, ALoginDuringAPostgreSQLRestartFailsNoneOfAThousand) {
  // 1,020 logins of an account whose token each instance holds in memory, in ten rounds of 34
  // at once on each of three instances: rounds 1-3 before the stop, 4-6 while PostgreSQL is
  // down, 7-10 after it is back.
  const std::string email = "finn@example.com";
  make_instances(3);
  const auto r =
      run_cli(instances_[0].config,
              {"account", "add", email, "--refresh-token-stdin", "--local-password-stdin"},
              peer_.add_account(email) + "\n" + local_password + "\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (auto& in : instances_) {
    start(in);
  }

  std::mutex mu;
  std::condition_variable changed;
  int rounds_done = 0;
  int phase = 0;  // 1: the server is stopped, 2: started again
  int succeeded = 0;
  std::string errors;
  std::thread logins([&] {
    for (int round = 1; round <= 10; ++round) {
      {
        std::unique_lock lock(mu);
        // Rounds 4-6 wait for the stop, rounds 7-10 for the start.
        changed.wait(lock, [&] { return round <= 3 || (round <= 6 ? phase >= 1 : phase >= 2); });
      }
      std::string round_errors;
      const int ok = logins_everywhere(email, 34, round_errors);
      std::lock_guard lock(mu);
      succeeded += ok;
      errors += round_errors;
      ++rounds_done;
      changed.notify_all();
    }
  });
  const auto wait_rounds = [&](int n) {
    std::unique_lock lock(mu);
    return changed.wait_for(lock, 300s, [&] { return rounds_done >= n; });
  };
  const bool first_rounds = wait_rounds(3);
  db_->stop_server();
  {
    std::lock_guard lock(mu);
    phase = 1;
  }
  changed.notify_all();
  const bool rounds_while_down = wait_rounds(6);
  db_->start_server();
  {
    std::lock_guard lock(mu);
    phase = 2;
  }
  changed.notify_all();
  logins.join();
  ASSERT_TRUE(first_rounds && rounds_while_down);
  EXPECT_EQ(succeeded, 1020) << errors << logs();
  const auto log = logs();
  EXPECT_NE(log.find("the database cannot be read; checking against the account as it was last "
                     "read"),
            std::string::npos)
      << "no login ran while PostgreSQL was down";

  // The rows of the logins while the server was down waited in each writer's memory: all 1,020
  // (and the first login's) are in the chain, which verifies.
  EXPECT_GE(wait_for_connection_rows(email, 1020), 1020u) << logs();
  const auto report = open_log()->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message;
  EXPECT_TRUE(report->intact) << report->reason;

  // Back: the store connects again by itself. A password changed through the CLI is what the
  // next logins check, which only a read of the database can give.
  const auto changed_password = run_cli(instances_[1].config, {"account", "passwd", email},
                                        std::string("a-new-local-pass\n"));
  ASSERT_EQ(changed_password.exit_code, 0) << changed_password.err;
  EXPECT_TRUE(wait_until(
      [&] { return client(instances_[0], email, {"login"}, "a-new-local-pass")["ok"].get<bool>(); },
      20s, "a login with the new password after the restart"))
      << read_file(instances_[0].home / "proxy.log");
  EXPECT_FALSE(client(instances_[0], email, {"login"})["ok"].get<bool>())
      << "the old password still works after the restart";
}

}  // namespace
}  // namespace iop::test
