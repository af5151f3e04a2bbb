// SIGKILL at random points around refreshes: after every restart the database must hold a
// refresh token that works. Each `token` run refreshes (refresh_margin is longer than a token
// lives), and is killed somewhere between starting and finishing.

#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "storage/credentials_store.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/token_endpoint_peer.hpp"

namespace iop::test {
namespace {

using namespace std::chrono_literals;

struct CrashCase {
  const char* rotation;
  bool with_redis;
  Engine engine = Engine::sqlite;
};

// Names the case in test output (instead of its raw bytes).
void PrintTo(const CrashCase& c, std::ostream* os) {
  *os << c.rotation << (c.with_redis ? "+redis" : "") << "+" << to_string(c.engine);
}

class CrashTest : public ::testing::TestWithParam<CrashCase> {};

TEST_P(CrashTest, DatabaseAlwaysHoldsAWorkingRefreshToken) {
  const auto param = GetParam();
  if (auto why = engine_unavailable(param.engine)) {
    GTEST_SKIP() << *why;
  }
  TempDir dir;
  const TestDatabase db(param.engine, dir.path() / "data");
  RedisServer redis;
  TokenEndpointPeer peer;
  peer.configure({{"rotation", param.rotation}});
  CliConfig cli{peer.token_url(), param.with_redis ? redis.url() : "", "refresh_margin = \"3h\"\n",
                // A killed process leaves its refresh lock behind; keep the wait short.
                "lock_timeout = \"100ms\"\n"};
  if (param.engine == Engine::postgresql) {
    cli.database = db.database();
    cli.password_file = db.password_file().string();
  }
  const auto config = write_cli_config(dir.path(), cli);
  const std::string email = "crash@example.com";
  const auto imported = peer.add_account(email);
  auto added = run_cli(config, {"account", "add", email, "--refresh-token-stdin"}, imported + "\n");
  ASSERT_EQ(added.exit_code, 0) << added.err;

  // Calibrate: how long one whole `token` run (start, refresh, commit, exit) takes with this
  // build (a sanitizer build is several times slower), so the kills land around refreshes.
  const auto started = std::chrono::steady_clock::now();
  const auto calibration = run_cli(config, {"token", email});
  ASSERT_EQ(calibration.exit_code, 0) << calibration.err;
  const auto run_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - started)
                          .count();
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> kill_after_ms(
      0, static_cast<int>(std::max<long long>(20, run_ms * 3 / 2)) + (param.with_redis ? 100 : 0));
  std::uniform_int_distribution<int> endpoint_delay_ms(0, 25);
  int killed = 0;
  int completed = 0;
  for (int round = 0; round < 40; ++round) {
    peer.configure({{"delay_ms", endpoint_delay_ms(rng)}});
    auto child = Process::start({binary_path(), "token", email, "--config", config.string()},
                                dir.path() / "child.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms(rng)));
    if (child.running()) {
      child.signal(SIGKILL);
      ++killed;
    } else {
      ++completed;
    }
    child.wait();

    // What a restarted process would find.
    auto store = db.open_store(storage::MasterKey::load(dir.path() / "data/master.key").value());
    ASSERT_TRUE(store.has_value()) << store.error().message;
    const auto row = (*store)->get(email);
    ASSERT_TRUE(row.has_value()) << row.error().message;
    EXPECT_EQ(row->status, storage::AccountStatus::active);
    const auto check = peer.check(row->refresh_token.reveal());
    ASSERT_TRUE(check["valid"].get<bool>())
        << "round " << round << ": the database holds a dead refresh token";
  }
  EXPECT_GT(killed, 0);
  peer.configure({{"delay_ms", 0}});
  const auto last = run_cli(config, {"token", email});
  EXPECT_EQ(last.exit_code, 0) << last.err;
  EXPECT_GT(peer.stats()["total"].get<int>(), 5) << "refreshes really happened";
  (void)completed;
}

INSTANTIATE_TEST_SUITE_P(
    Rotations, CrashTest,
    ::testing::Values(CrashCase{"keep", false}, CrashCase{"revoke_on_use", false},
                      CrashCase{"revoke_on_use", true},
                      CrashCase{"revoke_on_use", false, Engine::postgresql},
                      CrashCase{"revoke_on_use", true, Engine::postgresql}),
    [](const auto& test_info) {
      return std::string(test_info.param.rotation == std::string("keep") ? "Microsoft"
                                                                         : "RevokeOnUse") +
             (test_info.param.with_redis ? "WithRedis" : "DatabaseOnly") +
             (test_info.param.engine == Engine::postgresql ? "OnPostgreSQL" : "");
    });

}  // namespace
}  // namespace iop::test
