// Onboarding (issue #6) through the built binary: every authorization flow end to end against
// the test token endpoint (the "browser" is an HTTP client that follows the authorize redirect
// to the program's loopback listener), the identity check, shared mailboxes, app-only accounts,
// re-authorization, and logins of the accounts so made through the proxy to a real Dovecot.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "storage/credentials_store.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string alice = "alice@example.com";
const std::string shared = "shared@example.com";
const std::string mailbox_app = "box@example.com";

// The binary running in the background, stdout and stderr in one file.
class Running {
 public:
  Running(const fs::path& dir, const fs::path& config, std::vector<std::string> args,
          const std::string& stdin_data = {})
      : log_(dir / ("cli-" + std::to_string(++counter_) + ".log")) {
    std::vector<std::string> argv{binary_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--config");
    argv.push_back(config.string());
    process_ = Process::start(argv, log_, stdin_data);
  }
  // The same with stdin read from the FIFO `fifo` (the test writes to it later).
  Running(const fs::path& dir, const fs::path& config, std::vector<std::string> args,
          const fs::path& fifo)
      : log_(dir / ("cli-" + std::to_string(++counter_) + ".log")) {
    std::vector<std::string> argv{"sh", "-c", "exec \"$@\" < '" + fifo.string() + "'", "sh",
                                  binary_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--config");
    argv.push_back(config.string());
    process_ = Process::start(argv, log_);
  }

  [[nodiscard]] std::string output() const { return read_file(log_); }

  // Waits (bounded) until a line of the output contains `needle`; returns that line.
  std::string wait_for_line(std::string_view needle) {
    std::string found;
    // Stops early when the program has exited: the line will not come any more.
    poll_until(
        [&] {
          std::istringstream lines(output());
          for (std::string line; std::getline(lines, line);) {
            if (line.find(needle) != std::string::npos) {
              found = line;
              return true;
            }
          }
          return !process_.running();
        },
        30s);
    if (found.empty()) {
      throw std::runtime_error("no line with '" + std::string(needle) + "' in: " + output());
    }
    return found;
  }

  // The authorize URL the program printed.
  std::string authorize_url() {
    auto line = wait_for_line("/oauth2/v2.0/authorize?");
    const auto start = line.find("http");
    return line.substr(start, line.find_last_not_of(" \r") + 1 - start);
  }

  int wait() {
    const auto status = process_.wait(60s);
    if (!status) {
      throw std::runtime_error("the command did not end: " + output());
    }
    return *status;
  }

  void signal(int sig) { process_.signal(sig); }

 private:
  static inline int counter_ = 0;
  fs::path log_;
  Process process_;
};

class OnboardingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    peer_ = new TokenEndpointPeer();
    dovecot_ = new DovecotServer(peer_->introspect_url(), "nobody@example.com", "unused");
  }
  static void TearDownTestSuite() {
    delete dovecot_;
    delete peer_;
  }

  void SetUp() override {
    peer_->set_signin("");
    peer_->set_device_script(json::object());
    peer_->configure({{"client_id", "test-client"}, {"client_secret", ""}, {"rotation", "keep"}});
    tls_port_ = free_port();
    const std::string base = peer_->base_url();
    config_ = write_serve_config(
        dir_.path(), {.tls_port = tls_port_,
                      .server_extra = "auth_failure_delay = \"50ms\"\n",
                      .upstream_port = dovecot_->imaps_port(),
                      .upstream_ca_file = dovecot_->ca_file(),
                      .token_url = peer_->token_url(),
                      .oauth_extra = "authorize_endpoint = \"" + peer_->authorize_url_base() +
                                     "\"\n" + "device_endpoint = \"" + peer_->device_url() + "\"\n",
                      .log_level = "debug",
                      .more = "[providers.microsoft-app]\n"
                              "token_endpoint = \"" +
                              base + "/{tenant}/oauth2/v2.0/token\"\n" +
                              "client_id = \"app-client\"\n" + "upstream_host = \"localhost\"\n" +
                              "upstream_port = " + std::to_string(dovecot_->imaps_port()) + "\n"});
  }

  CommandResult cli(std::vector<std::string> args, const std::string& in = {}) {
    return run_cli(config_, std::move(args), in);
  }

  std::unique_ptr<storage::CredentialsStore> store() { return open_cli_store(dir_.path()).value(); }

  [[nodiscard]] bool stored(const std::string& email) {
    if (!fs::exists(dir_.path() / "data/master.key")) {
      return false;
    }
    return store()->get(email).has_value();
  }

  // A browser sign-in: the program prints the URL; the "browser" follows the authorize
  // redirect back to the program's loopback listener. Returns the exit status.
  int browser_sign_in(const std::string& email, std::vector<std::string> extra = {},
                      const std::string& stdin_data = "local-pass\n") {
    std::vector<std::string> args{"account", "add", email, "--browser", "--local-password-stdin"};
    args.insert(args.end(), extra.begin(), extra.end());
    Running cmd(dir_.path(), config_, args, stdin_data);
    const auto location = peer_->follow_authorize(cmd.authorize_url());
    last_page_ = peer_->authorize(location);  // the GET that lands on the loopback listener
    const int status = cmd.wait();
    last_output_ = cmd.output();
    return status;
  }

  // Logs in through the proxy (started here) and lists the folders.
  json proxy_login(const std::string& user, const std::string& password) {
    Process proxy = start_serve(config_, dir_.path() / "proxy.log");
    json result;
    wait_until(
        [&] {
          const auto r = run_command(
              {"python3", std::string(IOP_SOURCE_DIR) + "/tests/peers/imap_client.py", "--port",
               std::to_string(tls_port_), "--cafile", (dir_.path() / "certs/ca.crt").string(),
               "--user", user, "--password", password, "login", "list"},
              "", 60s);
          try {
            result = json::parse(r.out);
          } catch (const std::exception&) {
            result = json{{"ok", false}, {"error", r.out + r.err}};
          }
          // Still starting: not listening yet, or its CA file not written yet.
          const auto error = result.value("error", std::string());
          return result.value("ok", false) ||
                 (error.find("Connection refused") == std::string::npos &&
                  error.find("No such file") == std::string::npos);
        },
        60s, "the proxy to finish starting (listening, its CA file written)");
    proxy.signal(SIGTERM);
    proxy.wait(10s);
    result["proxy_log"] = read_file(dir_.path() / "proxy.log");
    return result;
  }

  static TokenEndpointPeer* peer_;
  static DovecotServer* dovecot_;
  TempDir dir_;
  fs::path config_;
  int tls_port_ = 0;
  HttpReply last_page_;
  std::string last_output_;
};

TokenEndpointPeer* OnboardingTest::peer_ = nullptr;
DovecotServer* OnboardingTest::dovecot_ = nullptr;

TEST_F(OnboardingTest, BrowserFlowStoresWhatTheEndpointIssuedAndLogsIn) {
  peer_->add_account(alice);
  ASSERT_EQ(browser_sign_in(alice), 0) << last_output_;
  EXPECT_EQ(last_page_.status, 200);
  EXPECT_NE(last_page_.body.find("Signed in"), std::string::npos) << last_page_.body;
  EXPECT_NE(last_output_.find("added alice@example.com"), std::string::npos) << last_output_;

  const auto row = store()->get(alice).value();
  EXPECT_EQ(row.provider, "default");
  const auto check = peer_->check(row.refresh_token.reveal());
  EXPECT_TRUE(check["valid"].get<bool>()) << check.dump();
  EXPECT_EQ(check["email"], alice);
  EXPECT_TRUE(peer_->introspect(row.access_token.reveal())["active"].get<bool>());
  EXPECT_FALSE(row.local_password_hash.empty());
  EXPECT_EQ(peer_->stats()["per_grant"].value("authorization_code", 0), 1);
  // No secret reached the terminal.
  EXPECT_EQ(last_output_.find(row.refresh_token.reveal()), std::string::npos);
  EXPECT_EQ(last_output_.find(row.access_token.reveal()), std::string::npos);

  const auto login = proxy_login(alice, "local-pass");
  EXPECT_TRUE(login["ok"].get<bool>()) << login.dump();
}

TEST_F(OnboardingTest, BrowserFlowRefusesAnAnswerForAnotherRequest) {
  peer_->add_account(alice);
  peer_->set_authorize_outcome({{"state", "forged-state"}});
  EXPECT_NE(browser_sign_in(alice), 0);
  EXPECT_NE(last_output_.find("state"), std::string::npos) << last_output_;
  EXPECT_NE(last_page_.body.find("state"), std::string::npos) << last_page_.body;
  EXPECT_FALSE(stored(alice));
}

TEST_F(OnboardingTest, BrowserErrorRedirectIsExplainedAndStoresNothing) {
  peer_->add_account(alice);
  peer_->set_authorize_outcome({{"error", "consent_required"}});
  EXPECT_NE(browser_sign_in(alice), 0);
  EXPECT_NE(last_output_.find("consent"), std::string::npos) << last_output_;
  EXPECT_FALSE(stored(alice));
}

TEST_F(OnboardingTest, SignedInAsSomeoneElseIsRefused) {
  peer_->add_account(alice);
  peer_->add_account("mallory@example.com");
  peer_->set_signin("mallory@example.com");
  EXPECT_NE(browser_sign_in(alice), 0);
  EXPECT_NE(last_output_.find("signed in as mallory@example.com, not alice@example.com"),
            std::string::npos)
      << last_output_;
  EXPECT_NE(last_output_.find("private"), std::string::npos) << last_output_;
  EXPECT_FALSE(stored(alice));
}

TEST_F(OnboardingTest, AnIdTokenThatIsNotAJwtIsAClearErrorAndStoresNothing) {
  peer_->add_account(alice);
  peer_->set_id_token_fault("not_a_jwt");
  EXPECT_NE(browser_sign_in(alice), 0);
  EXPECT_NE(last_output_.find("not a JWT"), std::string::npos) << last_output_;
  EXPECT_FALSE(stored(alice));
}

TEST_F(OnboardingTest, SharedMailboxIsAuthorizedByItsOwnerAndLogsInAsTheMailbox) {
  peer_->add_account(alice);
  // alice signs in; her tokens open the shared mailbox (Dovecot's introspection sees only the
  // token, so the peer says which mailbox they open).
  peer_->set_signin(alice, shared);
  ASSERT_EQ(browser_sign_in(shared, {"--signed-in-as", alice}), 0) << last_output_;
  const auto row = store()->get(shared).value();
  EXPECT_EQ(row.signed_in_as, alice);
  EXPECT_NE(cli({"account", "list"}).out.find("signed in as alice@example.com"), std::string::npos);
  const auto login = proxy_login(shared, "local-pass");
  EXPECT_TRUE(login["ok"].get<bool>()) << login.dump();
}

TEST_F(OnboardingTest, ReauthReplacesTokensAndKeepsTheLocalPassword) {
  peer_->add_account(alice);
  ASSERT_EQ(browser_sign_in(alice), 0) << last_output_;
  const auto before = store()->get(alice).value();
  ASSERT_TRUE(store()->mark_needs_reauth(alice, "test: invalid_grant").has_value());

  Running cmd(dir_.path(), config_, {"account", "reauth", alice, "--browser"});
  peer_->authorize(peer_->follow_authorize(cmd.authorize_url()));
  ASSERT_EQ(cmd.wait(), 0) << cmd.output();
  EXPECT_NE(cmd.output().find("re-authorized alice@example.com"), std::string::npos);

  const auto after = store()->get(alice).value();
  EXPECT_EQ(after.status, storage::AccountStatus::active);
  EXPECT_NE(after.refresh_token.reveal(), before.refresh_token.reveal());
  EXPECT_EQ(after.local_password_hash, before.local_password_hash);
  EXPECT_EQ(after.created_at, before.created_at);

  const auto missing = cli({"account", "reauth", "nobody@example.com", "--browser"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("no account nobody@example.com"), std::string::npos) << missing.err;
}

TEST_F(OnboardingTest, PasteFlowChecksStateAndWhereTheAddressPoints) {
  peer_->add_account(alice);
  const auto fifo = dir_.path() / "stdin.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);

  // A pasted address for another port is not ours.
  {
    Running cmd(dir_.path(), config_, {"account", "add", alice, "--paste"}, fifo);
    std::ofstream in(fifo);
    const auto location = peer_->follow_authorize(cmd.authorize_url());
    in << "http://localhost:1/?code=abc&state=x\n" << std::flush;
    in.close();
    EXPECT_NE(cmd.wait(), 0);
    EXPECT_NE(cmd.output().find("http://localhost:"), std::string::npos) << cmd.output();
    EXPECT_FALSE(stored(alice));
    (void)location;
  }
  // The right address, after an empty line (an extra Enter asks again). Every input is read
  // before the flow starts, so the local password comes first.
  Running cmd(dir_.path(), config_, {"account", "add", alice, "--paste", "--local-password-stdin"},
              fifo);
  std::ofstream in(fifo);
  in << "local-pass\n" << std::flush;
  const auto location = peer_->follow_authorize(cmd.authorize_url());
  in << "\n  " << location << "  \n" << std::flush;
  in.close();
  ASSERT_EQ(cmd.wait(), 0) << cmd.output();
  const auto row = store()->get(alice).value();
  EXPECT_TRUE(peer_->check(row.refresh_token.reveal())["valid"].get<bool>());
}

TEST_F(OnboardingTest, DeviceCodeFlowHonoursSlowDown) {
  peer_->add_account(alice);
  peer_->set_device_script({{"steps", {"pending", "slow_down", "ok"}}, {"interval", 1}});
  const auto r =
      cli({"account", "add", alice, "--device-code", "--local-password-stdin"}, "local-pass\n");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("enter the code"), std::string::npos) << r.out;
  const auto polls = peer_->device_polls();
  ASSERT_EQ(polls.size(), 3u) << polls.dump();
  // RFC 8628 §3.5: after slow_down the interval grows by 5 s, for this and every later poll.
  const double after_slow_down = polls[2]["t"].get<double>() - polls[1]["t"].get<double>();
  EXPECT_GE(after_slow_down, 6.0) << polls.dump();
  const double before = polls[1]["t"].get<double>() - polls[0]["t"].get<double>();
  EXPECT_GE(before, 1.0) << polls.dump();
  const auto row = store()->get(alice).value();
  EXPECT_TRUE(peer_->check(row.refresh_token.reveal())["valid"].get<bool>());
}

TEST_F(OnboardingTest, DeviceCodeDeclinedExpiredOrIncompleteStoresNothing) {
  peer_->add_account(alice);
  struct Case {
    json script;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{{"steps", {"declined"}}, {"interval", 1}}, "declined"},
      {{{"steps", {"expired"}}, {"interval", 1}}, "expired"},
      {{{"missing", {"user_code"}}}, "user_code"},
  };
  for (const auto& c : cases) {
    peer_->set_device_script(c.script);
    const auto r = cli({"account", "add", alice, "--device-code"});
    EXPECT_NE(r.exit_code, 0) << c.script.dump();
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.script.dump() << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_FALSE(stored(alice));
  }
}

TEST_F(OnboardingTest, CtrlCDuringDeviceCodeStoresNothing) {
  peer_->add_account(alice);
  peer_->set_device_script({{"steps", {"pending"}}, {"interval", 1}});
  Running cmd(dir_.path(), config_, {"account", "add", alice, "--device-code"});
  cmd.wait_for_line("enter the code");
  ASSERT_TRUE(wait_until([&] { return !peer_->device_polls().empty(); }, 10s,
                         "a device-code poll at the token endpoint"));
  ASSERT_FALSE(peer_->device_polls().empty());
  cmd.signal(SIGINT);
  EXPECT_EQ(cmd.wait(), 128 + SIGINT);
  EXPECT_NE(cmd.output().find("cancelled"), std::string::npos) << cmd.output();
  EXPECT_FALSE(stored(alice));
}

TEST_F(OnboardingTest, AppOnlyAccountWithASecretLogsInThroughTheProxy) {
  peer_->register_app(
      {{"client_id", "app-client"}, {"client_secret", "app-secret"}, {"mailbox", mailbox_app}});
  // A wrong secret stores nothing.
  auto r = cli({"account", "add", mailbox_app, "--client-credentials", "--tenant", "contoso.com",
                "--client-secret-stdin"},
               "wrong-secret\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nothing was stored"), std::string::npos) << r.err;
  EXPECT_FALSE(stored(mailbox_app));

  r = cli({"account", "add", mailbox_app, "--client-credentials", "--tenant", "contoso.com",
           "--client-secret-stdin", "--local-password-stdin"},
          "app-secret\nbox-local\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto row = store()->get(mailbox_app).value();
  EXPECT_EQ(row.provider, "microsoft-app");
  EXPECT_EQ(row.tenant, "contoso.com");
  EXPECT_EQ(row.client_secret.reveal(), "app-secret");
  EXPECT_TRUE(row.refresh_token.empty());
  const auto list = cli({"account", "list", "--format", "json"});
  const auto accounts = json::parse(list.out);
  ASSERT_EQ(accounts.size(), 1u);
  EXPECT_EQ(accounts[0]["flow"], "app");
  EXPECT_EQ(accounts[0]["provider"], "microsoft-app");

  // The token service gets the next token with the same grant.
  ASSERT_TRUE(store()
                  ->update_tokens(mailbox_app, {Secret(std::string("expired")), 1, std::nullopt,
                                                row.refreshed_at_ms + 1})
                  .has_value());
  const auto before = peer_->stats()["per_grant"].value("client_credentials", 0);
  const auto login = proxy_login(mailbox_app, "box-local");
  EXPECT_TRUE(login["ok"].get<bool>()) << login.dump();
  EXPECT_EQ(peer_->stats()["per_grant"].value("client_credentials", 0), before + 1);
}

TEST_F(OnboardingTest, AppOnlyAccountWithACertificate) {
  const auto key = dir_.path() / "app.key";
  const auto cert = dir_.path() / "app.crt";
  const auto made = run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                 "-keyout", key.string(), "-out", cert.string(), "-days", "2",
                                 "-subj", "/CN=imap-oauth2-proxy test app"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const auto pem = dir_.path() / "app.pem";
  std::ofstream(pem) << read_file(cert) << read_file(key);
  peer_->register_app({{"client_id", "app-client"},
                       {"certificate_pem", read_file(cert)},
                       {"mailbox", mailbox_app}});
  const auto r = cli({"account", "add", mailbox_app, "--client-credentials", "--tenant",
                      "contoso.com", "--client-certificate", pem.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto row = store()->get(mailbox_app).value();
  EXPECT_NE(row.client_certificate.reveal().find("PRIVATE KEY"), std::string::npos);
  // The token command proves the stored certificate works for later grants too.
  ASSERT_TRUE(store()
                  ->update_tokens(mailbox_app, {Secret(std::string("expired")), 1, std::nullopt,
                                                row.refreshed_at_ms + 1})
                  .has_value());
  const auto token = cli({"token", mailbox_app});
  ASSERT_EQ(token.exit_code, 0) << token.err;
  const auto introspected = peer_->introspect(token.out.substr(0, token.out.find('\n')));
  EXPECT_TRUE(introspected["active"].get<bool>());
  EXPECT_EQ(introspected["email"], mailbox_app);

  const auto bad = dir_.path() / "bad.pem";
  std::ofstream(bad) << read_file(cert);  // no private key
  const auto refused = cli({"account", "add", "other@example.com", "--client-credentials",
                            "--tenant", "contoso.com", "--client-certificate", bad.string()});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("private key"), std::string::npos) << refused.err;
}

TEST_F(OnboardingTest, InputsAreReadBeforeAnyGrantSpendsAToken) {
  // An endpoint that revokes a refresh token when it is used: a grant run before a missing
  // local password is noticed would lose the account.
  peer_->configure({{"rotation", "revoke_immediately"}});
  const auto refresh = peer_->add_account(alice);
  const auto r = cli({"account", "add", alice, "--refresh-token-stdin", "--local-password-stdin"},
                     refresh + "\n");
  peer_->configure({{"rotation", "keep"}});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("local password"), std::string::npos) << r.err;
  EXPECT_TRUE(peer_->check(refresh)["valid"].get<bool>()) << "the imported token was spent";
  EXPECT_FALSE(stored(alice));
}

TEST_F(OnboardingTest, APasswordReauthOfAnOAuthAccountIsRefusedAndKeepsItsToken) {
  const auto refresh = peer_->add_account(alice);
  auto r = cli({"account", "add", alice, "--refresh-token-stdin", "--local-password-stdin"},
               refresh + "\nlocal-pass\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto before = store()->get(alice).value();
  // Switching to a password would delete the refresh token: not without removing the account.
  r = cli({"account", "reauth", alice, "--password-stdin"}, "upstream-pass\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("account remove"), std::string::npos) << r.err;
  const auto after = store()->get(alice).value();
  EXPECT_TRUE(after.use_oauth);
  EXPECT_EQ(after.refresh_token.reveal(), before.refresh_token.reveal());
  // OAuth settings with a password account were dropped without a word; now they are refused.
  r = cli({"account", "add", "bob@example.com", "--password-stdin", "--provider", "google"},
          "upstream-pass\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not --password-stdin"), std::string::npos) << r.err;
  r = cli(
      {"account", "add", "app@example.com", "--client-credentials", "--provider", "microsoft-app",
       "--tenant", "contoso.com", "--client-secret-stdin", "--signed-in-as", alice},
      "secret\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--signed-in-as"), std::string::npos) << r.err;
  EXPECT_FALSE(stored("bob@example.com"));
  EXPECT_FALSE(stored("app@example.com"));
}

TEST_F(OnboardingTest, AnImportedRefreshTokenMustBeTheAccountsOwn) {
  const auto alices = peer_->add_account(alice);
  const auto zeds = peer_->add_account("zed@example.com");
  auto r = cli({"account", "add", alice, "--refresh-token-stdin"}, alices + "\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  const auto before = store()->get(alice).value();
  // Another user's token would replace a working one and log in as someone else.
  r = cli({"account", "reauth", alice, "--refresh-token-stdin"}, zeds + "\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("the refresh token is zed@example.com's, not alice@example.com's"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(store()->get(alice).value().refresh_token.reveal(), before.refresh_token.reveal());
  // An endpoint that revokes a token once used: the message says the one given is spent.
  peer_->configure({{"rotation", "revoke_immediately"}});
  r = cli({"account", "add", "frank@example.com", "--refresh-token-stdin"}, zeds + "\n");
  peer_->configure({{"rotation", "keep"}});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no longer accepts the one given"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--signed-in-as zed@example.com"), std::string::npos) << r.err;
  EXPECT_FALSE(stored("frank@example.com"));
  // A token whose grant did not include openid: refused the identity scope, imported without
  // it, with a warning that nobody checked whose it is.
  peer_->configure({{"refresh_openid", "refuse"}});
  const auto bobs = peer_->add_account("bob@example.com");
  r = cli({"account", "add", "bob@example.com", "--refresh-token-stdin"}, bobs + "\n");
  peer_->configure({{"refresh_openid", "allow"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("did not say whose refresh token this is"), std::string::npos) << r.err;
  EXPECT_TRUE(stored("bob@example.com"));
}

TEST_F(OnboardingTest, FlowFlagsAreCheckedBeforeAnythingHappens) {
  auto r = cli({"account", "add", alice, "--browser", "--device-code"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("give one flow"), std::string::npos) << r.err;
  r = cli({"account", "add", alice});  // no terminal, no flow
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--browser"), std::string::npos) << r.err;
  r = cli({"account", "add", alice, "--browser", "--provider", "nope"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no provider 'nope'"), std::string::npos) << r.err;
  r = cli({"account", "add", alice, "--browser", "--provider", "microsoft-app", "--tenant",
           "contoso.com"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--client-credentials"), std::string::npos) << r.err;
  r = cli({"account", "add", alice, "--browser", "--tenant", "a/b"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(stored(alice));
}

}  // namespace
}  // namespace iop::test
