// The built binary with `[storage] database = "postgresql://..."` (issue #10) against a real
// PostgreSQL the test starts: accounts added by one instance's CLI are seen by another's (two
// configs, one database, the same key file), doctor checks the connection, and the password
// stays out of everything printed.

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/cli_env.hpp"
#include "tests/support/raw_db.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/token_endpoint_peer.hpp"

namespace iop::test {
namespace {

namespace fs = std::filesystem;

class PostgresCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = engine_unavailable(Engine::postgresql)) {
      GTEST_SKIP() << *why;
    }
    db_.emplace(Engine::postgresql, dir_.path());
  }

  // An instance's folder: its own config and connection log, the shared database and key.
  fs::path instance(const std::string& name, const std::string& password_file) {
    const auto home = dir_.path() / name;
    fs::create_directories(home / "data");
    if (fs::exists(dir_.path() / "master.key")) {
      fs::copy_file(dir_.path() / "master.key", home / "data/master.key",
                    fs::copy_options::overwrite_existing);
    }
    CliConfig cli{peer_.token_url(), "", "", ""};
    cli.database = db_->database();
    cli.password_file = password_file;
    return write_cli_config(home, cli);
  }

  TempDir dir_;
  std::optional<TestDatabase> db_;
  TokenEndpointPeer peer_;
};

TEST_F(PostgresCliTest, TwoInstancesShareAccountsThroughTheDatabase) {
  const auto first = instance("one", db_->password_file().string());
  const std::string email = "shared@example.com";
  const auto added = run_cli(first, {"account", "add", email, "--refresh-token-stdin"},
                             peer_.add_account(email) + "\n");
  ASSERT_EQ(added.exit_code, 0) << added.err;
  // The second instance gets the same key file, as the README says.
  fs::copy_file(dir_.path() / "one/data/master.key", dir_.path() / "master.key");
  const auto second = instance("two", db_->password_file().string());

  const auto listed = run_cli(second, {"account", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(email), std::string::npos) << listed.out;
  const auto token = run_cli(second, {"token", email});
  ASSERT_EQ(token.exit_code, 0) << token.err;
  EXPECT_FALSE(token.out.empty());

  const auto doctor = run_cli(second, {"doctor"});
  EXPECT_NE(doctor.out.find("opens, migrations current"), std::string::npos) << doctor.out;
  EXPECT_NE(doctor.out.find(db_->database()), std::string::npos) << doctor.out;
  EXPECT_EQ(doctor.out.find(db_->password().reveal()), std::string::npos);
  // No SQLite file appeared: the accounts and the connection log are in PostgreSQL.
  EXPECT_FALSE(fs::exists(dir_.path() / "two/data/credentials.db"));
  EXPECT_FALSE(fs::exists(dir_.path() / "two/data/connection-log.db"));
}

TEST_F(PostgresCliTest, AnotherKeyIsRefusedByTheDatabase) {
  const auto first = instance("one", db_->password_file().string());
  ASSERT_EQ(run_cli(first, {"account", "add", "a@example.com", "--refresh-token-stdin"},
                    peer_.add_account("a@example.com") + "\n")
                .exit_code,
            0);
  // No key copied: this instance makes its own, which the database's key check refuses.
  const auto second = instance("two", db_->password_file().string());
  const auto listed = run_cli(second, {"account", "list"});
  EXPECT_NE(listed.exit_code, 0);
  EXPECT_NE(listed.err.find("master key does not match"), std::string::npos) << listed.err;
  // The key it made was never used: no file is left for a later start to load instead of the
  // cluster's key copied there.
  EXPECT_FALSE(fs::exists(dir_.path() / "two/data/master.key"));
}

TEST_F(PostgresCliTest, APasswordFileOthersCanReadIsRefused) {
  const auto file = dir_.path() / "pgpassword";
  std::ofstream(file) << db_->password().reveal() << "\n";
  ::chmod(file.c_str(), 0644);
  const auto config = instance("one", file.string());
  const auto listed = run_cli(config, {"account", "list"});
  EXPECT_NE(listed.exit_code, 0);
  EXPECT_NE(listed.err.find("chmod 600"), std::string::npos) << listed.err;
  ::chmod(file.c_str(), 0600);
  EXPECT_EQ(run_cli(config, {"account", "list"}).exit_code, 0);
}

TEST_F(PostgresCliTest, AWrongPasswordOrAPasswordInTheUrlIsAClearError) {
  const auto file = dir_.path() / "wrong";
  std::ofstream(file) << "wrong-password-31337\n";
  ::chmod(file.c_str(), 0600);
  const auto wrong = run_cli(instance("one", file.string()), {"account", "list"});
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.err.find("password authentication failed"), std::string::npos) << wrong.err;
  EXPECT_EQ(wrong.err.find("31337"), std::string::npos) << wrong.err;

  // The password written into the URL: refused, and not repeated.
  const auto home = dir_.path() / "inline";
  fs::create_directories(home);
  CliConfig cli{peer_.token_url(), "", "", ""};
  cli.database = db_->database();
  cli.database.insert(cli.database.find('@'), ":" + db_->password().reveal());
  const auto inline_password = run_cli(write_cli_config(home, cli), {"account", "list"});
  EXPECT_NE(inline_password.exit_code, 0);
  EXPECT_NE(inline_password.err.find("password_file"), std::string::npos) << inline_password.err;
  EXPECT_EQ(inline_password.err.find(db_->password().reveal()), std::string::npos)
      << inline_password.err;
}

TEST_F(PostgresCliTest, MigrateCopiesEveryAccountAndTheCopyServes) {
  // An SQLite setup with an OAuth account and a password account, each with a local password.
  const auto home = dir_.path() / "sqlite";
  fs::create_directories(home);
  const auto sqlite_config = write_cli_config(home, {peer_.token_url(), "", "", ""});
  const std::string oauth = "olga@example.com";
  const std::string legacy = "lars@example.com";
  auto r = run_cli(sqlite_config,
                   {"account", "add", oauth, "--refresh-token-stdin", "--local-password-stdin"},
                   peer_.add_account(oauth) + "\nlocal-1\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli(sqlite_config,
              {"account", "add", legacy, "--password-stdin", "--local-password-stdin"},
              "upstream-pass\nlocal-2\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto before = run_cli(sqlite_config, {"account", "list", "--format", "json"});
  ASSERT_EQ(before.exit_code, 0) << before.err;
  // The log holds the two account_added events (and whatever the adds logged): its head.
  const auto verified = run_cli(sqlite_config, {"audit", "--verify"});
  ASSERT_EQ(verified.exit_code, 0) << verified.err;
  const auto head = verified.out.substr(verified.out.find("head "));

  const auto migrated = run_cli(sqlite_config, {"migrate", "--to", db_->database(),
                                                "--password-file", db_->password_file().string()});
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  EXPECT_NE(migrated.out.find("copied 2 account(s)"), std::string::npos) << migrated.out;
  EXPECT_NE(migrated.out.find("copied the connection log"), std::string::npos) << migrated.out;
  // Run again at once (as after a migrate that stopped half way): the target holds exactly the
  // copy, which counts as done.
  const auto rerun = run_cli(sqlite_config, {"migrate", "--to", db_->database(), "--password-file",
                                             db_->password_file().string()});
  EXPECT_EQ(rerun.exit_code, 0) << rerun.err;

  // The configuration the command printed: the same accounts, usable.
  CliConfig cli{peer_.token_url(), "", "", ""};
  cli.database = db_->database();
  cli.password_file = db_->password_file().string();
  const auto pg_home = dir_.path() / "pg";
  fs::create_directories(pg_home / "data");
  fs::copy_file(home / "data/master.key", pg_home / "data/master.key");
  const auto pg_config = write_cli_config(pg_home, cli);
  // The log moved whole: the same head, verified under the same key in PostgreSQL.
  const auto pg_verified = run_cli(pg_config, {"audit", "--verify"});
  ASSERT_EQ(pg_verified.exit_code, 0) << pg_verified.err;
  EXPECT_NE(pg_verified.out.find(head), std::string::npos) << pg_verified.out << " vs " << head;
  const auto events = run_cli(pg_config, {"audit", "--event", "account_added"});
  EXPECT_NE(events.out.find(oauth), std::string::npos) << events.out;
  EXPECT_NE(events.out.find(legacy), std::string::npos) << events.out;
  const auto after = run_cli(pg_config, {"account", "list", "--format", "json"});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(nlohmann::json::parse(after.out), nlohmann::json::parse(before.out));
  const auto token = run_cli(pg_config, {"token", oauth});
  EXPECT_EQ(token.exit_code, 0) << token.err;

  // Again, once the new setup changed something (a local password): the target holds other
  // data now, and nothing is written.
  ASSERT_EQ(run_cli(pg_config, {"account", "passwd", legacy}, std::string("local-3\n")).exit_code,
            0);
  const auto again = run_cli(sqlite_config, {"migrate", "--to", db_->database(), "--password-file",
                                             db_->password_file().string()});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("already holds"), std::string::npos) << again.err;
}

TEST_F(PostgresCliTest, ALogThatDoesNotVerifyStopsMigrateUnlessItStaysBehind) {
  const auto home = dir_.path() / "sqlite";
  fs::create_directories(home);
  const auto sqlite_config = write_cli_config(home, {peer_.token_url(), "", "", ""});
  const std::string email = "tess@example.com";
  auto r = run_cli(sqlite_config,
                   {"account", "add", email, "--refresh-token-stdin", "--local-password-stdin"},
                   peer_.add_account(email) + "\nlocal-1\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // An edit of the log's first row (the account_added event) past the append-only trigger.
  RawDb(home / "data/credentials.db")
      .exec(
          "DROP TRIGGER connection_log_no_update; UPDATE connection_log SET account = "
          "'someone@else.com' WHERE id = 1");

  const std::vector<std::string> migrate{"migrate", "--to", db_->database(), "--password-file",
                                         db_->password_file().string()};
  const auto refused = run_cli(sqlite_config, migrate);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("does not verify"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--keep-connection-log"), std::string::npos) << refused.err;

  // Nothing was written: the accounts can move on their own, the log stays behind as the file
  // the printed configuration names.
  auto keep = migrate;
  keep.push_back("--keep-connection-log");
  const auto moved = run_cli(sqlite_config, keep);
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  EXPECT_NE(moved.out.find("copied 1 account(s)"), std::string::npos) << moved.out;
  EXPECT_NE(moved.out.find("connection_log = \"" + (home / "data/credentials.db").string()),
            std::string::npos)
      << moved.out;
  EXPECT_EQ(moved.out.find("copied the connection log"), std::string::npos) << moved.out;
}

}  // namespace
}  // namespace iop::test
