// The client library (client/, issue #8) through its public header only, against a real
// Dovecot that validates bearer tokens through the test token endpoint, with a real
// redis-server; accounts are added with the built command line. Also the example program, and a
// project outside the source tree built against the installed package.

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <imap_oauth2_proxy/client.hpp>

#include <array>
#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "storage/audit_log.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

namespace fs = std::filesystem;
namespace lib = imap_oauth2_proxy;
using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string alice = "alice@example.com";
const std::string legacy = "legacy@example.com";
const std::string legacy_upstream_pass = "legacy-upstream-pass";

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 0xf];
  }
  return out;
}

std::string script(const char* name) {
  return std::string(IOP_SOURCE_DIR) + "/tests/peers/" + name;
}

// Started once for the suite: Dovecot, Redis and the token endpoint; accounts through the CLI.
struct Env {
  TempDir dir;
  TokenEndpointPeer peer;
  RedisServer redis;
  std::unique_ptr<DovecotServer> dovecot;
  fs::path config;

  Env() {
    dovecot = std::make_unique<DovecotServer>(peer.introspect_url(), legacy, legacy_upstream_pass);
    ServeConfig c;
    c.tls_port = free_port();  // never served: the library needs no running proxy
    c.upstream_port = dovecot->imaps_port();
    c.upstream_ca_file = dovecot->ca_file();
    c.upstream_extra = "timeout = \"10s\"\n";
    c.token_url = peer.token_url();
    c.redis_url = redis.url();
    config = write_serve_config(dir.path(), c);
    add_oauth(alice);
    const auto r = run_cli(config, {"account", "add", legacy, "--password-stdin"},
                           legacy_upstream_pass + "\n");
    if (r.exit_code != 0) throw std::runtime_error("account add failed: " + r.err);
  }

  void add_oauth(const std::string& email, const std::vector<std::string>& more = {}) {
    const auto refresh = peer.add_account(email);
    std::vector<std::string> args{"account", "add", email, "--refresh-token-stdin"};
    args.insert(args.end(), more.begin(), more.end());
    const auto r = run_cli(config, args, refresh + "\n");
    if (r.exit_code != 0) throw std::runtime_error("account add failed: " + r.err);
  }

  // A new account whose stored access token has long expired and is not in Redis (this
  // process has never used it, so the library's memory holds none either).
  void add_expired(const std::string& email) {
    add_oauth(email);
    auto store = open_cli_store(dir.path()).value();
    auto row = store->get(email).value();
    row.token_expiry = 1;
    if (!store->upsert_account(row)) throw std::runtime_error("cannot expire the token");
    redis.flushall();
  }

  int refreshes(const std::string& email) {
    const auto stats = peer.stats()["per_account"];
    return stats.contains(email) ? stats[email].get<int>() : 0;
  }

  lib::ConnectOptions options() const {
    lib::ConnectOptions o;
    o.config_file = config;
    return o;
  }

  std::vector<storage::ConnectionRecord> audit_rows() {
    auto log = storage::AuditLog::open_for_reading(dir.path() / "data/credentials.db").value();
    return log->query({}).value();
  }

  // Straight to Dovecot with Python's imaplib and XOAUTH2: {uid: sha256 of BODY[]}.
  json direct_fetch(const std::string& email) {
    const auto token = run_cli(config, {"token", email}).out;
    const auto r = run_command(
        {"python3", script("imap_client.py"), "--host", "localhost", "--port",
         std::to_string(dovecot->imaps_port()), "--cafile", dovecot->ca_file().string(), "--user",
         email, "--xoauth2-token", token.substr(0, token.size() - 1), "fetch"},
        "", 120s);
    return json::parse(r.out);
  }
};

Env* env = nullptr;

class ClientLibraryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { env = new Env(); }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) {
      const auto log = env->dovecot->log();
      std::cerr << "---- dovecot log (tail) ----\n"
                << log.substr(log.size() > 4000 ? log.size() - 4000 : 0) << "\n---- end ----\n";
    }
  }
};

// The EXISTS count of a SELECT or EXAMINE answer.
long exists_of(const lib::Response& r) {
  long n = -1;
  for (const auto& u : r.untagged) {
    if (u.text.ends_with(" EXISTS")) n = std::stol(u.text.substr(2));
  }
  return n;
}

TEST_F(ClientLibraryTest, SelectsAndFetchesBodiesIdenticalToADirectFetch) {
  // Long lines, 8-bit bytes, and text that looks like IMAP framing inside the body.
  env->dovecot->deliver(alice,
                        "From: a@example.com\r\nSubject: framing\r\n\r\n"
                        "a1 OK not a completion\r\n* 9 EXISTS {5}\r\n\xc3\xa9t\xc3\xa9 " +
                            std::string(20000, 'x') + "\r\n");
  env->dovecot->deliver(alice, "Subject: second\r\n\r\nshort\r\n");

  auto imap = lib::get_imap_connection(alice, env->options());
  EXPECT_EQ(imap.account(), alice);
  EXPECT_NE(std::find(imap.capabilities().begin(), imap.capabilities().end(), "IDLE"),
            imap.capabilities().end());
  const auto select = imap.command("SELECT INBOX");
  ASSERT_TRUE(select.ok()) << select.text;
  EXPECT_NE(select.text.find("[READ-WRITE]"), std::string::npos) << select.text;
  EXPECT_GE(exists_of(select), 2);

  const auto fetch = imap.command("UID FETCH 1:* (BODY.PEEK[])");
  ASSERT_TRUE(fetch.ok()) << fetch.text;
  json mine = json::object();
  for (const auto& u : fetch.untagged) {
    ASSERT_EQ(u.literals.size(), 1u) << u.text;
    const auto at = u.text.find("UID ");
    ASSERT_NE(at, std::string::npos) << u.text;
    mine[std::to_string(std::stol(u.text.substr(at + 4)))] = sha256_hex(u.literals[0]);
  }
  const auto direct = env->direct_fetch(alice);
  ASSERT_TRUE(direct["ok"].get<bool>()) << direct.dump();
  EXPECT_EQ(mine, direct["messages"]);

  const auto bad = imap.command("FETCH");
  EXPECT_EQ(bad.status, lib::Status::bad);
  const auto no = imap.command("SELECT no-such-folder");
  EXPECT_EQ(no.status, lib::Status::no);
  EXPECT_TRUE(imap.is_open());
}

TEST_F(ClientLibraryTest, ASynchronizingLiteralWaitsForTheContinuation) {
  auto imap = lib::get_imap_connection(alice, env->options());
  const std::string message = "Subject: appended\r\n\r\nwith a literal\r\n";
  const auto append =
      imap.command("APPEND INBOX {" + std::to_string(message.size()) + "}\r\n" + message);
  ASSERT_TRUE(append.ok()) << append.text;
  EXPECT_NE(append.text.find("[APPENDUID"), std::string::npos) << append.text;
  EXPECT_THROW(imap.command("NOOP\r\nNOOP"), lib::Error) << "two commands in one";
}

TEST_F(ClientLibraryTest, TheConfigurationIsFoundLikeTheCommandLineFindsIt) {
  ::setenv("IMAP_OAUTH2_PROXY_CONFIG", env->config.c_str(), 1);
  auto imap = lib::get_imap_connection(alice);
  ::unsetenv("IMAP_OAUTH2_PROXY_CONFIG");
  EXPECT_TRUE(imap.command("NOOP").ok());
}

TEST_F(ClientLibraryTest, IdleSeesAnAppendFromAnotherConnection) {
  auto imap = lib::get_imap_connection(alice, env->options());
  const auto select = imap.command("SELECT INBOX");
  ASSERT_TRUE(select.ok());
  const long before = exists_of(select);
  // Dovecot reports a message appended after SELECT when IDLE starts or when it arrives, so
  // the order of the two connections does not matter.
  std::thread other([] {
    auto second = lib::get_imap_connection(alice, env->options());
    const std::string m = "Subject: while idling\r\n\r\nhello\r\n";
    const auto r = second.command("APPEND INBOX {" + std::to_string(m.size()) + "+}\r\n" + m);
    EXPECT_TRUE(r.ok()) << r.text;
  });
  long seen = -1;
  const auto done = imap.idle(
      [&](const lib::UntaggedResponse& u) {
        if (u.text.ends_with(" EXISTS")) seen = std::stol(u.text.substr(2));
        return seen <= before;
      },
      60s);
  other.join();
  EXPECT_TRUE(done.ok()) << done.text;
  EXPECT_GT(seen, before);
  EXPECT_TRUE(imap.command("NOOP").ok()) << "the connection is usable after IDLE";
}

TEST_F(ClientLibraryTest, AsyncConnectionCommandsAndIdle) {
  boost::asio::io_context io;
  std::exception_ptr failure;
  long before = -1;
  long seen = -1;
  std::string idle_text;
  std::thread other;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto options = env->options();
        auto imap = co_await lib::async_get_imap_connection(alice, std::move(options));
        const auto select = co_await imap.async_command("SELECT INBOX");
        before = exists_of(select);
        other = std::thread([] {
          auto second = lib::get_imap_connection(alice, env->options());
          const std::string m = "Subject: async idle\r\n\r\nhello\r\n";
          second.command("APPEND INBOX {" + std::to_string(m.size()) + "+}\r\n" + m);
        });
        lib::IdleCallback on_update = [&](const lib::UntaggedResponse& u) {
          if (u.text.ends_with(" EXISTS")) seen = std::stol(u.text.substr(2));
          return seen <= before;
        };
        const auto done = co_await imap.async_idle(std::move(on_update), 60s);
        idle_text = done.text;
        EXPECT_THROW(imap.command("NOOP"), lib::Error) << "blocking calls on an async connection";
        co_await imap.async_logout();
        EXPECT_FALSE(imap.is_open());
      },
      [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (other.joinable()) other.join();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
  }
  EXPECT_GT(seen, before);
  EXPECT_GE(before, 0);
}

TEST_F(ClientLibraryTest, AnAccessTokenTooOldForTheNextConnectionIsRefreshed) {
  const std::string dora = "dora@example.com";
  // Tokens living 10 minutes are never fresh enough for a session ([oauth]
  // session_min_lifetime, 45 min): each connection must get a new one.
  env->peer.configure({{"expires_in", 600}});
  env->add_oauth(dora);
  const int before = env->refreshes(dora);
  {
    auto imap = lib::get_imap_connection(dora, env->options());
    EXPECT_TRUE(imap.command("NOOP").ok());
  }
  EXPECT_EQ(env->refreshes(dora) - before, 1);
  {
    auto imap = lib::get_imap_connection(dora, env->options());
    EXPECT_TRUE(imap.command("NOOP").ok());
  }
  env->peer.configure({{"expires_in", 3599}});
  EXPECT_EQ(env->refreshes(dora) - before, 2);
  {
    auto imap = lib::get_imap_connection(dora, env->options());
    EXPECT_TRUE(imap.command("NOOP").ok());
  }
  {
    auto imap = lib::get_imap_connection(dora, env->options());
    EXPECT_TRUE(imap.command("NOOP").ok());
  }
  EXPECT_EQ(env->refreshes(dora) - before, 3) << "a fresh token is reused";
}

TEST_F(ClientLibraryTest, ATokenTheServerRefusesIsRefreshedOnceAndTheLoginRetried) {
  const std::string erin = "erin@example.com";
  env->add_oauth(erin);
  { auto imap = lib::get_imap_connection(erin, env->options()); }
  const int before = env->refreshes(erin);
  // The token the library holds (memory, Redis, database) is valid by its expiry, but the
  // server no longer accepts it.
  env->peer.revoke_access_tokens(erin);
  auto imap = lib::get_imap_connection(erin, env->options());
  EXPECT_TRUE(imap.command("NOOP").ok());
  EXPECT_EQ(env->refreshes(erin) - before, 1);
}

TEST_F(ClientLibraryTest, ARevokedRefreshTokenIsTheTypedNeedsReauthError) {
  const std::string bob = "bob@example.com";
  env->add_expired(bob);
  env->peer.revoke(bob);
  try {
    lib::get_imap_connection(bob, env->options());
    FAIL() << "connected";
  } catch (const lib::Error& e) {
    EXPECT_EQ(e.kind(), lib::ErrorKind::needs_reauth) << e.what();
    EXPECT_NE(std::string(e.what()).find("imap-oauth2-proxy account reauth bob@example.com"),
              std::string::npos)
        << e.what();
  }
  try {
    lib::get_imap_connection("nobody@example.com", env->options());
    FAIL() << "connected";
  } catch (const lib::Error& e) {
    EXPECT_EQ(e.kind(), lib::ErrorKind::not_found) << e.what();
  }
}

TEST_F(ClientLibraryTest, UpstreamDownIsTheTypedUnavailableError) {
  // The account's own upstream (account add --upstream), as the proxy would pick it.
  const std::string closed = "closed@example.com";
  env->add_oauth(closed, {"--upstream", "127.0.0.1:" + std::to_string(free_port())});
  try {
    lib::get_imap_connection(closed, env->options());
    FAIL() << "connected";
  } catch (const lib::Error& e) {
    EXPECT_EQ(e.kind(), lib::ErrorKind::upstream_unavailable) << e.what();
  }
  // A server that accepts and then says nothing: the timeout ends the wait.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor silent(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const std::string mute = "mute@example.com";
  env->add_oauth(mute,
                 {"--upstream", "127.0.0.1:" + std::to_string(silent.local_endpoint().port())});
  auto options = env->options();
  options.timeout = 300ms;
  try {
    lib::get_imap_connection(mute, options);
    FAIL() << "connected";
  } catch (const lib::Error& e) {
    EXPECT_EQ(e.kind(), lib::ErrorKind::upstream_unavailable) << e.what();
  }
}

TEST_F(ClientLibraryTest, PasswordAccountsLogInWithLogin) {
  auto imap = lib::get_imap_connection(legacy, env->options());
  EXPECT_TRUE(imap.command("SELECT INBOX").ok());
}

TEST_F(ClientLibraryTest, TheStreamCanBeTakenOver) {
  auto imap = lib::get_imap_connection(alice, env->options());
  auto released = imap.release_stream();
  EXPECT_FALSE(imap.is_open());
  EXPECT_THROW(imap.command("NOOP"), lib::Error);
  ASSERT_TRUE(released.stream);
  ASSERT_TRUE(released.io_context);
  // Blocking Asio calls on the stream, as code with its own IMAP client would make.
  boost::asio::write(*released.stream, boost::asio::buffer(std::string("x1 NOOP\r\n")));
  std::string in = released.buffered;
  boost::asio::read_until(*released.stream, boost::asio::dynamic_buffer(in), "x1 OK");
  EXPECT_NE(in.find("x1 OK"), std::string::npos) << in;
}

TEST_F(ClientLibraryTest, TheReleasedStreamTakesAsioAsyncOperations) {
  auto imap = lib::get_imap_connection(alice, env->options());
  auto released = imap.release_stream();
  ASSERT_TRUE(released.stream);
  auto& stream = *released.stream;
  std::string in = released.buffered;
  const std::string command = "x2 NOOP\r\n";
  std::optional<boost::system::error_code> result;
  boost::asio::async_write(stream, boost::asio::buffer(command),
                           [&](boost::system::error_code ec, std::size_t) {
                             if (ec) {
                               result = ec;
                               return;
                             }
                             boost::asio::async_read_until(
                                 stream, boost::asio::dynamic_buffer(in), "x2 OK",
                                 [&](boost::system::error_code ec2, std::size_t) { result = ec2; });
                           });
  released.io_context->restart();
  released.io_context->run();
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(*result) << result->message();
  EXPECT_NE(in.find("x2 OK"), std::string::npos) << in;
}

TEST_F(ClientLibraryTest, DestroyingTheReleasedStreamEndsAPendingRead) {
  auto imap = lib::get_imap_connection(alice, env->options());
  auto released = imap.release_stream();
  ASSERT_TRUE(released.stream);
  std::array<char, 64> buffer{};
  std::optional<boost::system::error_code> result;
  // Nothing was asked, so nothing comes: the read is still pending when the stream goes.
  released.stream->async_read_some(boost::asio::buffer(buffer),
                                   [&](boost::system::error_code ec, std::size_t) { result = ec; });
  boost::asio::post(*released.io_context, [&] { released.stream.reset(); });
  released.io_context->restart();
  released.io_context->run();
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(*result) << "the read ended without an error";
}

TEST_F(ClientLibraryTest, ConnectionsAreInTheConnectionLogAsLibrary) {
  const std::string fred = "fred@example.com";
  env->add_oauth(fred);
  {
    auto imap = lib::get_imap_connection(fred, env->options());
    EXPECT_TRUE(imap.command("SELECT INBOX").ok());
  }  // LOGOUT on destruction
  std::optional<storage::ConnectionRecord> row;
  wait_until(
      [&] {
        for (const auto& r : env->audit_rows()) {
          if (r.account == fred && r.event.empty()) row = r;  // not its account_added event
        }
        return row.has_value();
      },
      10s, "the library's connection-log row");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->listener, "library");
  EXPECT_EQ(row->outcome, storage::ConnectionOutcome::ok);
  EXPECT_EQ(row->close_reason, "logged out");
  EXPECT_NE(row->token_source, storage::TokenSource::none);
  EXPECT_GT(row->bytes_client_to_upstream, 0);
  EXPECT_GT(row->bytes_upstream_to_client, 0);
  EXPECT_LE(row->started_at_ms, row->ended_at_ms);
  EXPECT_TRUE(env->audit_rows().size() > 0);

  // A failed connection is logged too.
  const std::string gina = "gina@example.com";
  env->add_expired(gina);
  env->peer.revoke(gina);
  EXPECT_THROW(lib::get_imap_connection(gina, env->options()), lib::Error);
  wait_until(
      [&] {
        for (const auto& r : env->audit_rows()) {
          if (r.account == gina && r.listener == "library" &&
              r.outcome == storage::ConnectionOutcome::needs_reauth) {
            return true;
          }
        }
        return false;
      },
      10s, "the needs_reauth row");
  // And the token service's event, in the same chain: when and why the authorization broke.
  EXPECT_TRUE(wait_until(
      [&] {
        for (const auto& r : env->audit_rows()) {
          if (r.account == gina && r.event == "needs_reauth" &&
              r.close_reason.find("invalid_grant") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      10s, "the needs_reauth event"));
}

TEST_F(ClientLibraryTest, TheExampleListsFoldersAndSubjects) {
  const std::string hank = "hank@example.com";
  env->add_oauth(hank);
  for (int i = 1; i <= 12; ++i) {
    env->dovecot->deliver(hank, "Subject: note " + std::to_string(i) + "\r\n\r\nbody\r\n");
  }
  {
    auto imap = lib::get_imap_connection(hank, env->options());
    ASSERT_TRUE(imap.command("CREATE Archive").ok());
  }
  const auto r = run_command({std::string(IOP_BINARY_DIR) + "/examples/imap-oauth2-proxy-list-mail",
                              hank, "--config", env->config.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("  INBOX\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  Archive\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(12 in all)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  12  note 12\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  3  note 3\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("note 2\n"), std::string::npos) << "only the newest 10: " << r.out;
  EXPECT_LT(r.out.find("note 12"), r.out.find("note 3")) << "newest first";

  const auto bad =
      run_command({std::string(IOP_BINARY_DIR) + "/examples/imap-oauth2-proxy-list-mail",
                   "nobody@example.com", "--config", env->config.string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("error (not_found)"), std::string::npos) << bad.err;
}

// An application outside the source tree, against `cmake --install` of this build: with
// find_package(ImapOAuth2Proxy) and with pkg-config.
TEST(ClientLibraryInstall, AnOutsideProjectBuildsAgainstTheInstalledPackage) {
  TempDir prefix;
  const auto install = run_command(
      {IOP_CMAKE_COMMAND, "--install", IOP_BINARY_DIR, "--prefix", prefix.path().string()}, "",
      120s);
  ASSERT_EQ(install.exit_code, 0) << install.out << install.err;

  TempDir project;
  std::ofstream(project.path() / "main.cpp") << R"(#include <imap_oauth2_proxy/client.hpp>
#include <iostream>
int main() {
  try {
    imap_oauth2_proxy::ConnectOptions options;
    options.config_file = "/nonexistent/imap-oauth2-proxy.toml";
    imap_oauth2_proxy::get_imap_connection("someone@example.com", options);
  } catch (const imap_oauth2_proxy::Error& e) {
    std::cout << imap_oauth2_proxy::to_string(e.kind()) << "\n";
    return 0;
  }
  return 1;
}
)";
  std::ofstream(project.path() / "CMakeLists.txt") << R"(cmake_minimum_required(VERSION 3.20)
project(outside LANGUAGES CXX)
find_package(ImapOAuth2Proxy REQUIRED)
add_executable(app main.cpp)
target_link_libraries(app ImapOAuth2Proxy::client)
)";
  const auto build_dir = project.path() / "build";
  const auto configure =
      run_command({IOP_CMAKE_COMMAND, "-S", project.path().string(), "-B", build_dir.string(), "-G",
                   "Ninja", "-DCMAKE_PREFIX_PATH=" + prefix.path().string(),
                   std::string("-DCMAKE_CXX_FLAGS=") + IOP_OUTSIDE_FLAGS},
                  "", 120s);
  ASSERT_EQ(configure.exit_code, 0) << configure.out << configure.err;
  const auto build = run_command({IOP_CMAKE_COMMAND, "--build", build_dir.string()}, "", 300s);
  ASSERT_EQ(build.exit_code, 0) << build.out << build.err;
  const auto ran = run_command({(build_dir / "app").string()});
  EXPECT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_EQ(ran.out, "config\n") << ran.err;

  // pkg-config: the .pc file finds its prefix from where it lies.
  std::string pc_dir;
  for (const auto& entry : fs::recursive_directory_iterator(prefix.path())) {
    if (entry.path().filename() == "imap-oauth2-proxy-client.pc") {
      pc_dir = entry.path().parent_path().string();
    }
  }
  ASSERT_FALSE(pc_dir.empty());
  const auto flags = run_command({"env", "PKG_CONFIG_PATH=" + pc_dir, "pkg-config", "--cflags",
                                  "--libs", "imap-oauth2-proxy-client"});
  ASSERT_EQ(flags.exit_code, 0) << flags.err;
  const auto lib_dir = fs::path(pc_dir).parent_path().string();
  const auto exe = (project.path() / "app-pc").string();
  const auto compiled =
      run_command({"sh", "-c",
                   std::string("c++ -std=c++20 ") + IOP_OUTSIDE_FLAGS + " " +
                       (project.path() / "main.cpp").string() + " -o " + exe + " " +
                       flags.out.substr(0, flags.out.find('\n')) + " -Wl,-rpath," + lib_dir},
                  "", 300s);
  ASSERT_EQ(compiled.exit_code, 0) << compiled.out << compiled.err;
  const auto ran_pc = run_command({exe});
  EXPECT_EQ(ran_pc.out, "config\n") << ran_pc.err;
}

}  // namespace
}  // namespace iop::test
