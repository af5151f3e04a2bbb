// [upstream] probe (issue #9): the `LIST "" ""` after an upstream login runs against Microsoft
// Exchange only by default ("auto"), the one server known to accept a login and then refuse the
// session; anywhere else it is a round trip every login paid for nothing. The built binary
// (`serve`) in front of the light upstream (tests/support/light_imap_server.hpp), which counts
// the LIST commands it answers and can greet like Exchange.

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/cli_env.hpp"
#include "tests/support/imap_swarm.hpp"
#include "tests/support/light_imap_server.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view exchange_greeting = "The Microsoft Exchange IMAP4 service is ready.";
constexpr int sessions = 3;

struct ProbeCase {
  const char* name;
  std::string_view greeting;  // empty: the light server's own
  std::string probe_line;     // in [upstream]; empty: the default
  bool probed;                // one LIST per login upstream, else none
};

class UpstreamProbeTest : public ::testing::TestWithParam<ProbeCase> {};

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};

TEST_P(UpstreamProbeTest, ListRunsOnlyWhereTheSettingAndTheServerSaySo) {
  const ProbeCase& p = GetParam();
  TempDir dir;
  TokenEndpointPeer peer;
  LightImapServer light;
  if (!p.greeting.empty()) {
    light.set_greeting_text(std::string(p.greeting));
  }
  ServeConfig c;
  c.tls_port = free_port();
  c.upstream_host = "localhost";
  c.upstream_port = light.port();
  c.upstream_ca_file = light.ca_file();
  c.upstream_extra = p.probe_line;
  c.token_url = peer.token_url();
  const auto config = write_serve_config(dir.path(), c);
  const std::string user = "alice@example.com";
  const auto added =
      run_cli(config, {"account", "add", user, "--refresh-token-stdin", "--local-password-stdin"},
              peer.add_account(user) + "\nlocal-pass\n");
  ASSERT_EQ(added.exit_code, 0) << added.err;

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
  ImapSwarm swarm(ctx.get(), c.tls_port, sessions, {"a LOGIN " + user + " local-pass\r\n"});
  ASSERT_EQ(swarm.login_all(1, 60s), sessions) << swarm.first_error() << "\n"
                                               << read_file(dir.path() / "proxy.log");
  // The client's OK comes after the upstream login and its probe: the count is complete.
  EXPECT_EQ(light.logins(), std::uint64_t(sessions));
  EXPECT_EQ(light.lists(), p.probed ? std::uint64_t(sessions) : 0u);
  // Either way the sessions work end to end.
  EXPECT_EQ(swarm.noop_all(60s), sessions) << swarm.first_error();
  proxy.kill_and_wait();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, UpstreamProbeTest,
    ::testing::Values(ProbeCase{"AutoOtherServer", {}, "", false},
                      ProbeCase{"AutoExchange", exchange_greeting, "", true},
                      ProbeCase{"AutoWrittenOut", exchange_greeting, "probe = \"auto\"\n", true},
                      ProbeCase{"TrueOtherServer", {}, "probe = true\n", true},
                      ProbeCase{"FalseExchange", exchange_greeting, "probe = false\n", false}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace iop::test
