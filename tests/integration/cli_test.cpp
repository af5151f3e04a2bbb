// The command line, as the built binary, against the test token endpoint and redis-server.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "auth/password_hash.hpp"
#include "storage/credentials_store.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/token_endpoint_peer.hpp"

namespace iop::test {
namespace {

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = write_cli_config(dir_.path(), {peer_.token_url(), redis_.url(), "", ""});
  }

  CommandResult cli(std::vector<std::string> args, const std::string& in = {}) {
    return run_cli(config_, std::move(args), in);
  }

  // Adds an OAuth account by importing a refresh token the endpoint issued.
  std::string add_oauth(const std::string& email) {
    const auto refresh = peer_.add_account(email);
    const auto r = cli({"account", "add", email, "--refresh-token-stdin"}, refresh + "\n");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return refresh;
  }

  storage::Credentials row(const std::string& email) {
    return open_cli_store(dir_.path()).value()->get(email).value();
  }

  TempDir dir_;
  RedisServer redis_;
  TokenEndpointPeer peer_;
  std::filesystem::path config_;
};

TEST_F(CliTest, InitCreatesConfigKeyAndDatabase) {
  TempDir fresh;
  const auto r = run_command({binary_path(), "init", "--dir", fresh.path().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(fresh.path() / "imap-oauth2-proxy.toml"));
  EXPECT_TRUE(std::filesystem::exists(fresh.path() / "data/credentials.db"));
  struct stat st {};
  ASSERT_EQ(::stat((fresh.path() / "data/master.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  const auto again = run_command({binary_path(), "init", "--dir", fresh.path().string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("kept existing master key"), std::string::npos);
  // --config names the file (it was ignored, and the current folder used instead).
  const auto named = fresh.path() / "sub/my.toml";
  const auto file = run_command({binary_path(), "init", "--config", named.string()});
  ASSERT_EQ(file.exit_code, 0) << file.err;
  EXPECT_TRUE(std::filesystem::exists(named));
  EXPECT_TRUE(std::filesystem::exists(fresh.path() / "sub/data/master.key"));
}

TEST_F(CliTest, ImportedRefreshTokenIsProvenRotatedAndListedWithoutSecrets) {
  const auto imported = add_oauth("Alice@Example.com");
  const auto stored = row("alice@example.com");
  EXPECT_NE(stored.refresh_token.reveal(), imported) << "the rotated token is stored";
  EXPECT_TRUE(peer_.check(stored.refresh_token.reveal())["valid"].get<bool>());
  EXPECT_EQ(peer_.stats()["per_account"]["Alice@Example.com"].get<int>(), 1);

  const auto list = cli({"account", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("alice@example.com"), std::string::npos);
  EXPECT_NE(list.out.find("active"), std::string::npos);
  EXPECT_EQ(list.out.find(stored.refresh_token.reveal()), std::string::npos);
  EXPECT_EQ(list.out.find(stored.access_token.reveal()), std::string::npos);
  const auto json = nlohmann::json::parse(cli({"account", "list", "--format", "json"}).out);
  ASSERT_EQ(json.size(), 1u);
  EXPECT_EQ(json[0]["type"], "oauth");
}

TEST_F(CliTest, TokenPrintsAFreshAccessToken) {
  add_oauth("bob@example.com");
  const auto r = cli({"token", "bob@example.com"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, row("bob@example.com").access_token.reveal() + "\n");
  EXPECT_TRUE(peer_.introspect(r.out.substr(0, r.out.size() - 1))["active"].get<bool>());
  EXPECT_EQ(r.err.find(row("bob@example.com").access_token.reveal()), std::string::npos);
}

TEST_F(CliTest, JsonLogLinesParseAndHoldNoSecrets) {
  add_oauth("jason@example.com");
  redis_.flushall();
  const auto r = cli({"token", "jason@example.com", "-v", "--log-format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int lines = 0;
  std::istringstream in(r.err);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);  // throws on a line that is not JSON
    EXPECT_TRUE(j.contains("msg") && j.contains("level") && j.contains("time")) << line;
    ++lines;
  }
  EXPECT_GT(lines, 0);
  EXPECT_EQ(r.err.find(r.out.substr(0, r.out.size() - 1)), std::string::npos);
}

TEST_F(CliTest, ABadRefreshTokenStoresNothing) {
  const auto r =
      cli({"account", "add", "carol@example.com", "--refresh-token-stdin"}, "rt.never-issued\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nothing was stored"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("rt.never-issued"), std::string::npos);
  EXPECT_EQ(cli({"account", "list", "--format", "json"}).out, "[]\n");
  const int requests = peer_.stats()["total"].get<int>();
  const auto ctl = cli({"account", "add", "carol@example.com", "--refresh-token-stdin"},
                       std::string("rt.a\x01z\n"));
  EXPECT_EQ(ctl.exit_code, 1);
  EXPECT_EQ(peer_.stats()["total"].get<int>(), requests)
      << "a control character is refused locally";
}

TEST_F(CliTest, PasswordAccountsLocalPasswordsAndRemoval) {
  auto r =
      cli({"account", "add", "legacy@example.com", "--password-stdin", "--local-password-stdin"},
          "upstream-secret\nlocal-secret\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto stored = row("legacy@example.com");
  EXPECT_FALSE(stored.use_oauth);
  EXPECT_EQ(stored.password.reveal(), "upstream-secret");
  EXPECT_TRUE(stored.local_password_hash.starts_with("$scrypt$"));
  EXPECT_EQ(stored.local_password_hash.find("local-secret"), std::string::npos);

  r = cli({"account", "passwd", "legacy@example.com"}, "another\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(row("legacy@example.com").local_password_hash, stored.local_password_hash);

  r = cli({"token", "legacy@example.com"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("uses a password upstream"), std::string::npos);
  EXPECT_EQ(r.out.find("upstream-secret"), std::string::npos);

  EXPECT_EQ(cli({"account", "remove", "legacy@example.com"}).exit_code, 0);
  r = cli({"account", "remove", "legacy@example.com"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no account legacy@example.com"), std::string::npos);
}

TEST_F(CliTest, ListShowsAnIpv6UpstreamInBrackets) {
  // common/host_port's format_host_port: "[::1]:1993", which parse_host_port reads back, not
  // "::1:1993".
  auto r = cli({"account", "add", "v6@example.com", "--password-stdin", "--upstream", "[::1]:1993"},
               "upstream-secret\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto json = nlohmann::json::parse(cli({"account", "list", "--format", "json"}).out);
  ASSERT_EQ(json.size(), 1u);
  EXPECT_EQ(json[0]["upstream"], "[::1]:1993");
}

TEST_F(CliTest, ClearErrors) {
  auto r = cli({"token", "not-an-email"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not an email address"), std::string::npos);

  add_oauth("dave@example.com");
  // A different master key: refused, never garbage tokens.
  std::filesystem::rename(dir_.path() / "data/master.key", dir_.path() / "data/master.key.real");
  r = cli({"token", "dave@example.com"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("master.key"), std::string::npos) << r.err;
  // The key is gone but the database is there: 'init' would refuse; restoring is the way.
  EXPECT_NE(r.err.find("restore the key file"), std::string::npos) << r.err;
  {
    std::ofstream k(dir_.path() / "data/master.key", std::ios::binary);
    k << std::string(32, 'k');
  }
  std::filesystem::permissions(
      dir_.path() / "data/master.key",
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  r = cli({"token", "dave@example.com"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not match"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());

  std::ofstream(config_, std::ios::app) << "[log]\nformat = \"xml\"\n";
  r = cli({"account", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("[log] format"), std::string::npos) << r.err;
}

TEST_F(CliTest, AGeneratedLocalPasswordIsShownOnlyOnceItIsStored) {
  // A sign-in that fails: no password was set, so none is shown.
  auto r = cli(
      {"account", "add", "kim@example.com", "--refresh-token-stdin", "--generate-local-password"},
      "rt.never-issued\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out.find("local password"), std::string::npos) << r.out;
  const auto refresh = peer_.add_account("kim@example.com");
  r = cli(
      {"account", "add", "kim@example.com", "--refresh-token-stdin", "--generate-local-password"},
      refresh + "\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string label =
      "local password (shown once; mail clients use it with the account's "
      "address): ";
  const auto at = r.out.find(label);
  ASSERT_NE(at, std::string::npos) << r.out;
  const auto start = at + label.size();
  const std::string password = r.out.substr(start, r.out.find('\n', start) - start);
  EXPECT_EQ(password.size(), 24u);
  EXPECT_TRUE(auth::verify_password(Secret(password), row("kim@example.com").local_password_hash));
}

TEST_F(CliTest, AccountListCreatesNothingWhereThereIsNoDatabase) {
  // A config copied elsewhere: its relative paths now point at an empty folder.
  TempDir elsewhere;
  const auto copy = elsewhere.path() / "imap-oauth2-proxy.toml";
  std::filesystem::copy_file(config_, copy);
  const auto r = run_cli(copy, {"account", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("run 'imap-oauth2-proxy init'"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(elsewhere.path() / "data")) << "a read created files";
}

TEST_F(CliTest, ConcurrentProcessesRefreshOnceThroughTheRedisLock) {
  add_oauth("erin@example.com");
  // Expire the stored token and forget the cached one, so every process wants a refresh.
  {
    auto store = open_cli_store(dir_.path()).value();
    auto r = store->get("erin@example.com").value();
    r.token_expiry = 1;
    ASSERT_TRUE(store->upsert_account(r).has_value());
  }
  redis_.flushall();
  peer_.reset_stats();
  peer_.configure({{"delay_ms", 600}});
  std::vector<std::thread> threads;
  std::vector<CommandResult> results(4);
  for (std::size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([this, &results, i] { results[i] = cli({"token", "erin@example.com"}); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, results.front().out);
  }
  EXPECT_EQ(peer_.stats()["per_account"]["erin@example.com"].get<int>(), 1);
}

TEST_F(CliTest, AConfigHoldingASecretThatOthersCanReadIsAWarning) {
  TempDir other;
  // The key and database `account list` reads (it creates none); the config is replaced below.
  ASSERT_EQ(run_command({binary_path(), "init", "--dir", other.path().string()}).exit_code, 0);
  const auto config = write_cli_config(
      other.path(), {peer_.token_url(), "", "client_secret = \"s3cret-marker\"\n", ""});
  ASSERT_EQ(::chmod(config.c_str(), 0644), 0);
  auto r = run_cli(config, {"account", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("holds a secret and other users can read it (mode 0644)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("chmod 600"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("s3cret-marker"), std::string::npos);
  ASSERT_EQ(::chmod(config.c_str(), 0600), 0);
  r = run_cli(config, {"account", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("holds a secret"), std::string::npos) << r.err;
  // Without a secret, a readable file is fine.
  const auto plain = write_cli_config(dir_.path(), {peer_.token_url(), "", "", ""});
  ASSERT_EQ(::chmod(plain.c_str(), 0644), 0);
  r = run_cli(plain, {"account", "list"});
  EXPECT_EQ(r.err.find("holds a secret"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace iop::test
