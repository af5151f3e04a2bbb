// SMTP submission through the proxy (the built binary running `serve`) side by side with direct
// submission to Dovecot, in one run, on 127.0.0.1: Dovecot 2.3's submission service (XOAUTH2
// through the test token endpoint's introspection) relaying into an aiosmtpd sink, redis-server,
// the test token endpoint (issue #11).
//
//   cmake -S /work/main -B /work/build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release
//   ninja -C /work/build-bench -j2 imap-oauth2-proxy smtp_bench
//   /work/build-bench/bench/smtp_bench [--messages N] [--workers K]
//
// One C++ client (OpenSSL, implicit TLS, certificate verified, a full handshake every time, no
// session resumption) for both paths. What is measured:
// 1. Added latency per message: N submissions one after another, each a whole session: connect,
//    TLS, greeting, EHLO, AUTH (direct: XOAUTH2 with the access token, on the 334 continuation
//    as Dovecot wants for long lines; proxy: PLAIN with the local password), MAIL, RCPT, DATA
//    with a 2 KB message, the 250 after the final dot; QUIT untimed. Direct and proxied
//    interleaved; p50 and p99 of each, and the p50 difference.
// 2. Submissions per second: K workers each running such sessions back to back until N
//    messages were sent in all; messages / wall time, direct and proxied.
// The sink's and Dovecot's own cost are in both paths; the difference is the proxy's.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "certs/local_cert.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/smtp_sink.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::string alice = "alice@example.com";
const std::string alice_local = "bench-local-password";

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "smtp_bench: %s\n", what.c_str());
  std::exit(1);
}

std::string base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

SSL_CTX* client_ctx(const fs::path& ca) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr || SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    die("cannot load CA " + ca.string());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

// One blocking implicit-TLS SMTP session; every socket operation bounded by 30 s.
class SmtpConn {
 public:
  ~SmtpConn() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
  }

  bool open(SSL_CTX* ctx, int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{30, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return false;
    ssl_ = SSL_new(ctx);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    return SSL_connect(ssl_) == 1;
  }

  bool send(const std::string& data) {
    return SSL_write(ssl_, data.data(), static_cast<int>(data.size())) ==
           static_cast<int>(data.size());
  }

  // The code of the next whole reply (multiline replies read to their last line); 0 on error.
  int reply() {
    for (;;) {
      const auto eol = buf_.find("\r\n");
      if (eol == std::string::npos) {
        char tmp[16384];
        const int n = SSL_read(ssl_, tmp, sizeof tmp);
        if (n <= 0) return 0;
        buf_.append(tmp, static_cast<std::size_t>(n));
        continue;
      }
      const std::string line = buf_.substr(0, eol);
      buf_.erase(0, eol + 2);
      if (line.size() >= 4 && line[3] == '-') continue;
      return line.size() >= 3 ? std::atoi(line.substr(0, 3).c_str()) : 0;
    }
  }

  bool expect(const std::string& command, int code) { return send(command) && reply() == code; }

 private:
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

struct Env {
  test::TempDir dir;
  test::TokenEndpointPeer peer;
  test::RedisServer redis;
  test::SmtpSink sink;
  std::unique_ptr<test::DovecotServer> dovecot;
  fs::path config;
  int submissions_port = 0;
  test::Process proxy;
  std::string token;

  Env() {
    dovecot = std::make_unique<test::DovecotServer>(peer.introspect_url(), "pw@example.com", "pw",
                                                    test::DovecotOptions{sink.port()});
    submissions_port = test::free_port();
    test::ServeConfig c;
    c.tls_port = test::free_port();
    c.server_extra =
        "listen_submissions = \"127.0.0.1:" + std::to_string(submissions_port) + "\"\n";
    c.upstream_port = dovecot->imaps_port();
    c.upstream_ca_file = dovecot->ca_file();
    c.upstream_extra =
        "smtp_host = \"localhost\"\nsmtp_port = " + std::to_string(dovecot->submissions_port()) +
        "\nsmtp_tls = \"implicit\"\n";
    c.token_url = peer.token_url();
    c.redis_url = redis.url();
    c.log_level = "warn";
    config = test::write_serve_config(dir.path(), c);
    const auto refresh = peer.add_account(alice);
    const auto r = test::run_cli(
        config, {"account", "add", alice, "--refresh-token-stdin", "--local-password-stdin"},
        refresh + "\n" + alice_local + "\n");
    if (r.exit_code != 0) die("account add failed: " + r.err);
    const auto t = test::run_cli(config, {"token", alice});
    if (t.exit_code != 0) die("token failed: " + t.err);
    token = t.out.substr(0, t.out.find_last_not_of("\r\n") + 1);
    proxy = test::start_serve(config, dir.path() / "proxy.log");
    if (!test::poll_until(
            [&] {
              return test::accepts_connections(submissions_port) &&
                     fs::exists(certs::ca_certificate_path(dir.path() / "certs/server.crt"));
            },
            30s)) {
      die("the proxy did not start: " + test::read_file(dir.path() / "proxy.log"));
    }
  }
};

const std::string message = [] {
  std::string m = "From: alice@example.com\r\nTo: rcpt@example.net\r\nSubject: bench\r\n\r\n";
  while (m.size() < 2000) m += "a line of the benchmark message, about seventy bytes long....\r\n";
  return m;
}();

// One whole submission; seconds from connect to the 250 after the data, or -1 on failure.
double submit(SSL_CTX* ctx, int port, const std::string& auth_line, bool continuation,
              const std::string& response) {
  const auto start = Clock::now();
  SmtpConn c;
  if (!c.open(ctx, port) || c.reply() != 220 || !c.expect("EHLO bench.test\r\n", 250)) return -1;
  if (continuation) {
    if (!c.expect(auth_line, 334) || !c.expect(response + "\r\n", 235)) return -1;
  } else if (!c.expect(auth_line, 235)) {
    return -1;
  }
  if (!c.expect("MAIL FROM:<alice@example.com>\r\n", 250) ||
      !c.expect("RCPT TO:<rcpt@example.net>\r\n", 250) || !c.expect("DATA\r\n", 354) ||
      !c.expect(message + ".\r\n", 250)) {
    return -1;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  c.send("QUIT\r\n");
  return seconds;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

int arg(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

int run(int argc, char** argv) {
  const int messages = arg(argc, argv, "--messages", 200);
  const int workers = arg(argc, argv, "--workers", 8);
  Env env;
  SSL_CTX* direct_ctx = client_ctx(env.dovecot->ca_file());
  SSL_CTX* proxy_ctx = client_ctx(certs::ca_certificate_path(env.dir.path() / "certs/server.crt"));
  const std::string xoauth2 =
      base64("user=" + alice + "\x01" + "auth=Bearer " + env.token + "\x01\x01");
  const std::string plain =
      base64(std::string("\0", 1) + alice + std::string("\0", 1) + alice_local);
  auto direct = [&] {
    return submit(direct_ctx, env.dovecot->submissions_port(), "AUTH XOAUTH2\r\n", true, xoauth2);
  };
  auto proxied = [&] {
    return submit(proxy_ctx, env.submissions_port, "AUTH PLAIN " + plain + "\r\n", false, "");
  };
  // Warm-up: fills the proxy's local-password and token caches and Dovecot's auth cache.
  if (direct() < 0 || proxied() < 0) die("warm-up submission failed");

  std::vector<double> d, p;
  for (int i = 0; i < messages; ++i) {
    const double a = direct();
    const double b = proxied();
    if (a < 0 || b < 0) die("a submission failed");
    d.push_back(a * 1000);
    p.push_back(b * 1000);
  }
  std::printf(
      "latency per message (%d sequential sessions each, ms): direct p50 %.2f p99 %.2f | "
      "proxy p50 %.2f p99 %.2f | added p50 %+.2f ms (ratio %.2f)\n",
      messages, percentile(d, 0.5), percentile(d, 0.99), percentile(p, 0.5), percentile(p, 0.99),
      percentile(p, 0.5) - percentile(d, 0.5), percentile(p, 0.5) / percentile(d, 0.5));

  auto rate = [&](const std::function<double()>& one) {
    std::atomic<int> next{0};
    std::atomic<int> failed{0};
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&] {
        while (next.fetch_add(1) < messages) {
          if (one() < 0) ++failed;
        }
      });
    }
    for (auto& t : threads) t.join();
    if (failed > 0) die(std::to_string(failed.load()) + " concurrent submissions failed");
    return messages / std::chrono::duration<double>(Clock::now() - start).count();
  };
  const double direct_rate = rate(direct);
  const double proxy_rate = rate(proxied);
  std::printf(
      "submissions per second (%d messages, %d workers): direct %.1f | proxy %.1f "
      "(ratio %.2f)\n",
      messages, workers, direct_rate, proxy_rate, proxy_rate / direct_rate);
  if (!env.sink.wait_for_messages(static_cast<std::size_t>(4 * messages + 2), 120s)) {
    std::printf("warning: the sink holds %zu of %d messages\n", env.sink.messages().size(),
                4 * messages + 2);
  }
  SSL_CTX_free(direct_ctx);
  SSL_CTX_free(proxy_ctx);
  return 0;
}

}  // namespace
}  // namespace iop

int main(int argc, char** argv) {
  try {
    return iop::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smtp_bench: %s\n", e.what());
    return 1;
  }
}
