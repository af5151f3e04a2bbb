// Logins per second through three `serve` instances sharing one PostgreSQL and one Redis, next to
// one instance on the same database, in one run (issue #10). Not a test: it prints figures.
//
//   build/bench/cluster_bench [--rounds N] [--logins N]
//
// Everything runs on this machine: a PostgreSQL started for the run (initdb in a temporary
// folder, fsync off), Redis, Dovecot (high-performance imap-login), the test token endpoint, the
// proxies and the clients (test::ImapSwarm, one epoll thread per instance driven). 48 accounts
// with their tokens cached in Redis; each login is TCP + TLS + greeting + LOGIN to its tagged OK
// (the proxy's local password check, the token from Redis, the upstream TLS + XOAUTH2 login to
// Dovecot). The same 48 logins are in flight in both setups: one instance gets all 48 accounts,
// three instances 16 each (one login per account in flight per instance: the proxy's login
// limiter would otherwise delay repeated logins of one account). Rounds alternate one / three;
// the medians are reported with their ratio.
//
// On a machine whose cores are all busy with one instance (this one has 2, shared with Dovecot,
// PostgreSQL and the clients) three instances cannot be faster: the figure shows what sharing
// the database costs, not what more machines would gain.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "certs/local_cert.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/imap_swarm.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int accounts = 48;

[[noreturn]] void die(const std::string& why) { throw std::runtime_error(why); }

struct Instance {
  fs::path home;
  fs::path config;
  int port = 0;
  iop::test::Process proxy;
};

struct Cluster {
  iop::test::TempDir dir;
  iop::test::TokenEndpointPeer peer;
  iop::test::RedisServer redis;
  std::unique_ptr<iop::test::DovecotServer> dovecot;
  std::unique_ptr<iop::test::TestDatabase> db;
  std::vector<Instance> instances;
  std::vector<std::string> logins;  // "a LOGIN email pass\r\n", one per account

  explicit Cluster(int n) {
    if (auto why = iop::test::engine_unavailable(iop::test::Engine::postgresql)) die(*why);
    db = std::make_unique<iop::test::TestDatabase>(iop::test::Engine::postgresql, dir.path());
    dovecot = std::make_unique<iop::test::DovecotServer>(peer.introspect_url(), "nobody@x.com",
                                                         "unused-password");
    for (int i = 0; i < n; ++i) {
      Instance in;
      in.home = dir.path() / ("instance-" + std::to_string(i));
      fs::create_directories(in.home);
      in.port = iop::test::free_port();
      iop::test::ServeConfig c;
      c.tls_port = in.port;
      c.upstream_port = dovecot->imaps_port();
      c.upstream_ca_file = dovecot->ca_file();
      c.upstream_extra = "timeout = \"30s\"\n";
      c.token_url = peer.token_url();
      c.redis_url = redis.url();
      c.log_level = "warn";
      c.more = "[storage]\ndatabase = \"" + db->database() + "\"\npassword_file = \"" +
               db->password_file().string() + "\"\nkey_file = \"" +
               (dir.path() / "master.key").string() + "\"\n";
      in.config = iop::test::write_serve_config(in.home, c);
      instances.push_back(std::move(in));
    }
    for (int i = 0; i < accounts; ++i) {
      const std::string email = "bench" + std::to_string(i) + "@example.com";
      const std::string pass = "bench-pass-" + std::to_string(i);
      const auto r = iop::test::run_cli(
          instances[0].config,
          {"account", "add", email, "--refresh-token-stdin", "--local-password-stdin"},
          peer.add_account(email) + "\n" + pass + "\n");
      if (r.exit_code != 0) die("account add: " + r.err);
      logins.push_back("a LOGIN " + email + " " + pass + "\r\n");
    }
    for (auto& in : instances) {
      in.proxy = iop::test::start_serve(in.config, in.home / "proxy.log");
      if (!iop::test::poll_until([&] { return iop::test::accepts_connections(in.port); }, 30s)) {
        die("an instance did not start: " + iop::test::read_file(in.home / "proxy.log"));
      }
    }
  }
};

// Logs in `total` sessions through the first `used` instances at once (the accounts split
// between them), every session closed afterwards; returns logins per second.
double logins_per_second(Cluster& cluster, int used, int total) {
  std::vector<std::unique_ptr<iop::test::ImapSwarm>> swarms;
  std::vector<SSL_CTX*> contexts;
  const int per_instance_accounts = accounts / used;
  for (int i = 0; i < used; ++i) {
    const auto& in = cluster.instances[static_cast<std::size_t>(i)];
    contexts.push_back(iop::test::new_client_tls_context(
        iop::certs::ca_certificate_path(in.home / "certs/server.crt"), true));
    std::vector<std::string> mine(cluster.logins.begin() + i * per_instance_accounts,
                                  cluster.logins.begin() + (i + 1) * per_instance_accounts);
    swarms.push_back(std::make_unique<iop::test::ImapSwarm>(contexts.back(), in.port, total / used,
                                                            std::move(mine)));
  }
  std::vector<int> ready(static_cast<std::size_t>(used));
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < used; ++i) {
    threads.emplace_back([&, i] {
      ready[static_cast<std::size_t>(i)] =
          swarms[static_cast<std::size_t>(i)]->login_all(per_instance_accounts, 120s);
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  int done = 0;
  for (int i = 0; i < used; ++i) {
    done += ready[static_cast<std::size_t>(i)];
    if (ready[static_cast<std::size_t>(i)] != total / used) {
      die("logins failed: " + swarms[static_cast<std::size_t>(i)]->first_error());
    }
    swarms[static_cast<std::size_t>(i)]->close_all();
  }
  swarms.clear();
  for (auto* ctx : contexts) SSL_CTX_free(ctx);
  return done / seconds;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(int argc, char** argv) {
  int rounds = 3;
  int logins = 960;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--rounds") {
      rounds = std::stoi(argv[i + 1]);
    } else if (flag == "--logins") {
      logins = std::stoi(argv[i + 1]) / accounts * accounts;
    } else {
      die("unknown flag " + flag + " (--rounds N, --logins N)");
    }
  }
  std::printf("cluster_bench: %d logins per run (%d accounts, %d in flight), %d rounds\n", logins,
              accounts, accounts, rounds);
  Cluster cluster(3);
  // A first pass through every instance: local-password and token caches warm everywhere.
  (void)logins_per_second(cluster, 3, accounts * 3);
  (void)logins_per_second(cluster, 1, accounts);
  std::vector<double> one;
  std::vector<double> three;
  for (int r = 0; r < rounds; ++r) {
    one.push_back(logins_per_second(cluster, 1, logins));
    three.push_back(logins_per_second(cluster, 3, logins));
    std::printf("  round %d: one instance %.0f logins/s, three instances %.0f logins/s\n", r + 1,
                one.back(), three.back());
    std::fflush(stdout);
  }
  const double m1 = median(one);
  const double m3 = median(three);
  std::printf("median: one instance %.0f logins/s, three instances %.0f logins/s, ratio %.2f\n", m1,
              m3, m3 / m1);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "cluster_bench: %s\n", e.what());
    return 1;
  }
}
