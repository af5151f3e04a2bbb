// 10,000 sessions in one proxy process (issue #9): the built binary (`serve`) between a swarm of
// TLS clients (one thread, epoll, OpenSSL) and the light upstream (tests/support/
// light_imap_server.hpp), which can hold far more sessions than Dovecot on this machine. Every
// session must log in, stay open and answer a NOOP; none may be dropped.

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tests/support/cli_env.hpp"
#include "tests/support/imap_swarm.hpp"
#include "tests/support/light_imap_server.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The sessions are spread over this many accounts and logged in one at a time per account
// (ImapSwarm::login_all): the proxy delays an account's logins while several of them are in
// flight (a guessing defence, auth/login_limiter.hpp, up to 4 s each), which 10,000 logins of
// one account would measure instead.
constexpr int accounts = 8;

std::string account(int i) { return fmt::format("user{:02}@example.com", i); }
std::string local_password(int i) { return fmt::format("local-pass-{:02}", i); }

// The goal of issue #9. Through an ASan+UBSan proxy, 9,900 sessions took 9 minutes on this
// 2-core machine under other builds' load (load average 6 to 10), close to ctest's 600 s bound,
// against 70 s to 4 minutes without sanitizers: the sanitizer build holds fewer, still thousands.
#if defined(__SANITIZE_ADDRESS__)
constexpr int wanted_sessions = 3'000;
#else
constexpr int wanted_sessions = 10'000;
#endif

// Descriptors beyond two a session, per process: this one (the test binary, gtest, the swarm's
// epoll, the token endpoint's child pipes) and the proxy (listeners, database, log, event loops;
// it keeps 64 aside, app/serve.cpp).
constexpr rlim_t descriptor_slack = 200;

// Raises this process's soft RLIMIT_NOFILE to its hard limit (the proxy, started from here,
// inherits it and raises its own the same way) and returns it.
rlim_t raise_open_file_limit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur != limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? 1 << 20 : limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
    }
  }
  return limit.rlim_cur == RLIM_INFINITY ? 1 << 20 : limit.rlim_cur;
}

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};

TEST(ManySessionsTest, TenThousandIdleSessionsThroughOneProxyNoneDropped) {
  // Two descriptors a session in this process (the swarm's client socket and the light
  // upstream's) and two in the proxy (client and upstream side). Without CAP_SYS_RESOURCE the
  // hard limit cannot rise: a hard limit of exactly 20,000 (this machine's) leaves room for
  // 9,900 sessions, which is what the test then holds, saying so.
  const rlim_t open_files = raise_open_file_limit();
  const int sessions = static_cast<int>(std::min<rlim_t>(
      wanted_sessions, open_files > descriptor_slack ? (open_files - descriptor_slack) / 2 : 0));
  if (sessions < 1000) {
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << open_files << " is too low for "
                 << wanted_sessions
                 << " sessions (2 descriptors a session in this process and in the proxy); "
                    "raise it (ulimit -Hn, LimitNOFILE) to at least "
                 << 2 * wanted_sessions + descriptor_slack;
  }
  if (sessions < wanted_sessions) {
    std::printf(
        "[ INFO     ] RLIMIT_NOFILE hard limit %llu: holding %d sessions, not %d (2 descriptors "
        "a session in this process and in the proxy)\n",
        static_cast<unsigned long long>(open_files), sessions, wanted_sessions);
  }
  ::testing::Test::RecordProperty("sessions", sessions);

  TempDir dir;
  TokenEndpointPeer peer;
  LightImapServer light;
  ServeConfig c;
  c.tls_port = free_port();
  c.upstream_host = "localhost";
  c.upstream_port = light.port();
  c.upstream_ca_file = light.ca_file();
  c.upstream_extra = "timeout = \"60s\"\n";
  c.token_url = peer.token_url();
  c.log_level = "warn";  // info would log two lines a session
  const auto config = write_serve_config(dir.path(), c);
  std::vector<std::string> logins;
  for (int i = 0; i < accounts; ++i) {
    const auto refresh = peer.add_account(account(i));
    const auto added = run_cli(
        config, {"account", "add", account(i), "--refresh-token-stdin", "--local-password-stdin"},
        refresh + "\n" + local_password(i) + "\n");
    ASSERT_EQ(added.exit_code, 0) << added.err;
    logins.push_back("a LOGIN " + account(i) + " " + local_password(i) + "\r\n");
  }

  Process proxy = start_serve(config, dir.path() / "proxy.log");
  const auto proxy_ca = dir.path() / "certs/ca.crt";
  ASSERT_EQ(
      wait_for_start(
          proxy,
          [&] { return std::filesystem::exists(proxy_ca) && accepts_connections(c.tls_port); },
          30s),
      StartUp::ready)
      << read_file(dir.path() / "proxy.log");

  const std::unique_ptr<SSL_CTX, SslCtxFree> ctx(new_client_tls_context(proxy_ca, true));
  ImapSwarm swarm(ctx.get(), c.tls_port, sessions, logins);
  const auto t0 = Clock::now();
  // The bound only stops a hang.
  const int logged_in = swarm.login_all(accounts, 20min);
  const auto t1 = Clock::now();
  EXPECT_EQ(logged_in, sessions) << "first failure: " << swarm.first_error() << "\n"
                                 << read_file(dir.path() / "proxy.log");
  // The proxy answers a client's LOGIN only after its upstream login, so every session is
  // already open upstream; wait anyway rather than rely on that ordering.
  EXPECT_TRUE(wait_until([&] { return light.authenticated_sessions() >= std::size_t(logged_in); },
                         60s, "the light upstream holding every session"));
  // Live upstream connections: every session, and at most one spare ([upstream] preconnect:
  // TLS up, not logged in, so not among the logins either).
  EXPECT_LE(light.live_sessions() - std::size_t(sessions), 1u) << light.live_sessions();
  EXPECT_GE(light.live_sessions(), std::size_t(sessions));
  EXPECT_EQ(light.logins(), std::uint64_t(sessions));
  EXPECT_EQ(light.failed_logins(), 0u);
  // Each account logged in upstream as itself, as often as the swarm logged it in.
  const auto by_user = light.logins_of();
  ASSERT_EQ(by_user.size(), std::size_t(accounts));
  for (int i = 0; i < accounts; ++i) {
    const auto it = by_user.find(account(i));
    ASSERT_NE(it, by_user.end()) << account(i);
    EXPECT_EQ(it->second, std::uint64_t(sessions / accounts + (i < sessions % accounts ? 1 : 0)))
        << account(i);
  }

  // Every session is still there, end to end: a NOOP through the relay answered by the upstream.
  const int noop_ok = swarm.noop_all(10min);
  const auto t2 = Clock::now();
  EXPECT_EQ(noop_ok, sessions) << "first failure: " << swarm.first_error();
  EXPECT_EQ(swarm.count(ImapSwarm::State::failed), 0);
  EXPECT_GE(light.live_sessions(), std::size_t(sessions));
  EXPECT_LE(light.live_sessions() - std::size_t(sessions), 1u) << light.live_sessions();
  EXPECT_EQ(light.authenticated_sessions(), std::size_t(sessions));
  EXPECT_EQ(light.accept_errors(), 0u);
  EXPECT_TRUE(proxy.running());

  const auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  std::printf("[ INFO     ] %d sessions: logins %.1f s, NOOPs %.1f s\n", sessions, seconds(t1 - t0),
              seconds(t2 - t1));
  // Ending the proxy first spares it 2 x `sessions` orderly closes.
  proxy.kill_and_wait();
}

}  // namespace
}  // namespace iop::test
