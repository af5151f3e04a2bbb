// The TLS IMAP proxy (the built binary running `serve`) side by side with direct Dovecot, in one
// run, against real peers on 127.0.0.1: Dovecot 2.3 (XOAUTH2 through the test token endpoint's
// introspection), redis-server, the test token endpoint. One C++ client (OpenSSL, full TLS
// handshakes, certificates verified, no session resumption) is used for both paths.
//
//   cmake -S /work/main -B /work/build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release
//   ninja -C /work/build-bench -j2 imap-oauth2-proxy proxy_bench
//   /work/build-bench/bench/proxy_bench
//
// Runtime: about 40 s on this 2-core machine (setup and delivery ~5 s, throughput ~15 s, latency
// ~5 s, concurrency ~15 s). Options (defaults in brackets): --messages N [20]
// --message-mb N [10] --rounds N [5] --logins N [200] --sessions N [2000] --light-sessions N
// [10000] --phases tlciaw [tlci] (t = throughput, l = latency, c = concurrency, i = concurrency
// against the light upstream, a = audit on vs off, w = prewarm: direct vs proxy vs proxy with
// [upstream] prewarm, --logins each) --audit-logins N [2000]
// --audit-block N [100] --probe true|false|auto (the proxies' [upstream] probe; [not written:
// "auto", which sends no probe to Dovecot]). IOP_BINARY overrides the proxy
// binary (default: the build's app/imap-oauth2-proxy; use a Release build). The figures are
// sensitive to other load on the machine: the load average is printed before and after.
//
// What is measured (MB = 10^6 bytes):
// 1. Throughput: `UID FETCH 1:* (BODY.PEEK[])` of N x M MB messages (delivered with doveadm
//    save), timed from sending the FETCH to its tagged OK, direct (XOAUTH2, SASL-IR in one write)
//    and through the proxy (LOGIN), `rounds` times each in ABBA order after one untimed warm-up
//    of each; medians. The proxy's CPU (utime+stime of /proc/PID/stat, all threads) is taken
//    around each proxied FETCH: seconds per 100 MB relayed. Dovecot's CPU (its process group),
//    the client's own CPU and how busy the whole machine was are printed per run, to show where
//    the cycles go and that the client is not the bottleneck.
// 2. Login latency, warm caches (a proxied login first fills the local-password and token
//    caches): from connect() to the tagged OK of the login command (TCP connect + TLS handshake
//    + greeting + LOGIN, or AUTHENTICATE XOAUTH2 direct), LOGOUT untimed; iterations interleaved
//    direct/proxy; p50 and p99, and the p50 of each part.
// 3. Concurrency: a fresh proxy process, one warm-up login, VmRSS; then `sessions` TLS sessions
//    logged in through the proxy and left idle (one thread, non-blocking sockets, epoll, at most
//    16 logins in flight, one per account of 16); VmRSS again after 1 s; (after - before) /
//    sessions; then NOOP on every session: all must answer OK.
// 3b. The same with `light-sessions` sessions against the light upstream (tests/support/
//    light_imap_server.hpp, in this process: Dovecot here cannot hold 10,000 sessions), through
//    a fresh proxy whose [upstream] is that server. This process then holds two descriptors a
//    session, so the open-file limit caps the count (printed when it does).
// 4. Audit on vs off (issue #8): proxied logins (as in 2) alternating in blocks between this proxy
//    and a second one with [audit] connection_log = false; p50 and p99 of each and the
//    difference (target: p99 within 0.2 ms).
// 5. Prewarm (issue #9): logins as in 2, interleaved: direct, this proxy, and a second proxy with
//    [upstream] prewarm = true (each of its logins takes the connection its pool made after the
//    previous one; the phase waits for the replacement between logins). p50 and p99 of each.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <functional>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "certs/local_cert.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/imap_swarm.hpp"
#include "tests/support/light_imap_server.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/token_endpoint_peer.hpp"

using namespace iop;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

const std::string alice = "alice@example.com";
const std::string alice_local = "alice-local-pass";
const std::string legacy = "legacy@example.com";
const std::string legacy_pass = "legacy-upstream-pass";

// Thrown up to main(), so the fixtures' destructors stop every peer and the proxy.
[[noreturn]] void die(const std::string& what) { throw std::runtime_error(what); }

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// ---------------------------------------------------------------------------------------------
// /proc readings of the proxy process.

double cpu_seconds(pid_t pid) {
  const auto stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) die("cannot read /proc/PID/stat of the proxy");
  // After "pid (comm)": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
  // cmajflt utime(14) stime(15).
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  if (std::sscanf(stat.c_str() + close + 1,
                  " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) {
    die("cannot parse /proc/PID/stat of the proxy");
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

long status_kib(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atol(line.c_str() + key.size());
  }
  die(std::string("no ") + field + " in /proc/PID/status");
}

// utime+stime of every live process in process group `pgid` (Dovecot: the master and its
// children, imap-login, auth, the session's imap process).
double group_cpu_seconds(pid_t pgid) {
  unsigned long long ticks = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto stat = slurp(entry.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    int pgrp = 0;
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    if (std::sscanf(stat.c_str() + close + 1,
                    " %*c %*d %d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &pgrp, &utime,
                    &stime) == 3 &&
        pgrp == pgid) {
      ticks += utime + stime;
    }
  }
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The Dovecot master started for `conf` (its command line names the file), or -1.
pid_t find_dovecot_master(const fs::path& conf) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmdline = slurp(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find("-F") != std::string::npos &&
        cmdline.find(conf.string()) != std::string::npos) {
      return static_cast<pid_t>(std::atoi(name.c_str()));
    }
  }
  return -1;
}

int fd_count(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// CPU time of the whole machine so far: {busy, total} in seconds (all CPUs; busy excludes idle
// and iowait). Busy/wall during a run says how many of the cores were in use.
std::pair<double, double> machine_cpu() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  in >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
  unsigned long long total = 0;
  for (auto x : v) total += x;
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return {static_cast<double>(total - v[3] - v[4]) / hz, static_cast<double>(total) / hz};
}

double client_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto s = [](timeval tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

// ---------------------------------------------------------------------------------------------
// The client: OpenSSL over plain sockets.

// TLS records this client received (record headers seen by OpenSSL's message callback), for
// records per MB: direct, that is how Dovecot frames the data (what the proxy reads upstream);
// proxied, how the proxy frames it.
std::atomic<std::uint64_t> records_received{0};

void count_records(int write_p, int /*version*/, int content_type, const void* /*buf*/,
                   std::size_t /*len*/, SSL* /*ssl*/, void* /*arg*/) {
  if (write_p == 0 && content_type == SSL3_RT_HEADER) {
    records_received.fetch_add(1, std::memory_order_relaxed);
  }
}

SSL_CTX* make_client_ctx(const fs::path& ca, bool lean) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) die("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    die("cannot load CA " + ca.string());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);  // a full handshake every time
  if (lean) SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!lean) SSL_CTX_set_msg_callback(ctx, count_records);
  return ctx;
}

int tcp_socket(bool nonblocking) {
  const int fd =
      ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) die(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

std::string base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// A blocking TLS IMAP connection with a 256 KiB read buffer; every socket operation is bounded
// by a 30 s timeout.
class Conn {
 public:
  Conn() : buf_(256 * 1024) {}
  ~Conn() { close(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool open(SSL_CTX* ctx, int port) {
    fd_ = tcp_socket(false);
    timeval tv{30, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const auto addr = loopback(port);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      return fail(std::string("connect: ") + std::strerror(errno));
    }
    ssl_ = SSL_new(ctx);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    if (SSL_connect(ssl_) != 1) return fail("TLS handshake failed");
    return true;
  }

  bool send(const std::string& line) {  // one SSL_write: one TLS record, one TCP write
    return SSL_write(ssl_, line.data(), static_cast<int>(line.size())) ==
               static_cast<int>(line.size()) ||
           fail("write failed");
  }

  bool read_line(std::string& line) {
    for (;;) {
      const char* start = buf_.data() + pos_;
      const void* nl = std::memchr(start, '\n', len_ - pos_);
      if (nl != nullptr) {
        const auto n = static_cast<std::size_t>(static_cast<const char*>(nl) - start) + 1;
        line.assign(start, n);
        pos_ += n;
        return true;
      }
      if (!fill()) return false;
    }
  }

  // Reads responses until the tagged one (returned in `tagged`); literals are skipped and their
  // sizes added to `literal_bytes`. A failure challenge ("+ ...") is answered with an empty line.
  bool until_tagged(const std::string& tag, std::string& tagged,
                    std::uint64_t* literal_bytes = nullptr) {
    std::string line;
    const std::string prefix = tag + " ";
    for (;;) {
      if (!read_line(line)) return false;
      if (line.rfind(prefix, 0) == 0) {
        tagged = line;
        return true;
      }
      if (line.rfind("+", 0) == 0) {
        if (!send("\r\n")) return false;
        continue;
      }
      if (line.size() >= 3 && line.compare(line.size() - 3, 3, "}\r\n") == 0) {
        const auto open = line.rfind('{');
        if (open == std::string::npos) continue;
        const auto n = std::strtoull(line.c_str() + open + 1, nullptr, 10);
        if (!skip(n)) return false;
        if (literal_bytes != nullptr) *literal_bytes += n;
      }
    }
  }

  // Greeting, then LOGIN (proxy) or AUTHENTICATE XOAUTH2 with SASL-IR (direct); true on OK.
  bool login(bool xoauth2, const std::string& user, const std::string& secret) {
    return greeting() && login_command(xoauth2, user, secret);
  }
  bool greeting() {
    std::string line;
    return (read_line(line) && line.rfind("* OK", 0) == 0) || fail("no greeting: " + line);
  }
  bool login_command(bool xoauth2, const std::string& user, const std::string& secret) {
    std::string line;
    if (xoauth2) {
      const auto ir = base64("user=" + user + "\x01" + "auth=Bearer " + secret + "\x01\x01");
      if (!send("a AUTHENTICATE XOAUTH2 " + ir + "\r\n")) return false;
    } else {
      if (!send("a LOGIN " + user + " " + secret + "\r\n")) return false;
    }
    if (!until_tagged("a", line)) return false;
    return line.rfind("a OK", 0) == 0 || fail("login refused: " + line);
  }

  bool command(const std::string& tag, const std::string& cmd, std::string& tagged,
               std::uint64_t* literal_bytes = nullptr) {
    return send(tag + " " + cmd + "\r\n") && until_tagged(tag, tagged, literal_bytes);
  }

  void logout() {
    std::string tagged;
    command("z", "LOGOUT", tagged);
    close();
  }

  void close() {
    if (ssl_ != nullptr) {
      SSL_shutdown(ssl_);  // close_notify, do not wait for the peer's
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  bool fail(std::string e) {
    error_ = std::move(e);
    return false;
  }
  bool fill() {
    if (pos_ > 0) {
      std::memmove(buf_.data(), buf_.data() + pos_, len_ - pos_);
      len_ -= pos_;
      pos_ = 0;
    }
    if (len_ == buf_.size()) return fail("line too long");
    const int n = SSL_read(ssl_, buf_.data() + len_, static_cast<int>(buf_.size() - len_));
    if (n <= 0) return fail("connection closed or read timeout");
    len_ += static_cast<std::size_t>(n);
    return true;
  }
  bool skip(std::uint64_t n) {
    while (n > 0) {
      if (pos_ == len_) {
        pos_ = len_ = 0;
        if (!fill()) return false;
      }
      const auto take = std::min<std::uint64_t>(n, len_ - pos_);
      pos_ += take;
      n -= take;
    }
    return true;
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::vector<char> buf_;
  std::size_t pos_ = 0;
  std::size_t len_ = 0;
  std::string error_;
};

// ---------------------------------------------------------------------------------------------
// The environment: peers, config, accounts, the proxy process.

// Phase 3 spreads its sessions over this many accounts and logs them in one at a time per
// account (test::ImapSwarm::login_all): the proxy delays an account's logins while several of
// them are in flight (auth/login_limiter.hpp, up to 4 s each), which 64 logins in flight of one
// account run into.
constexpr int swarm_accounts = 16;
constexpr int swarm_in_flight = swarm_accounts;

// --probe: the proxies' [upstream] probe (true, false or auto); empty: not written.
std::string upstream_probe;

std::string probe_line() {
  if (upstream_probe.empty()) return {};
  const bool boolean = upstream_probe == "true" || upstream_probe == "false";
  return "probe = " + (boolean ? upstream_probe : "\"" + upstream_probe + "\"") + "\n";
}

struct Env {
  test::TempDir dir;
  test::TokenEndpointPeer peer;
  test::RedisServer redis;
  std::unique_ptr<test::DovecotServer> dovecot;
  fs::path config;
  int tls_port = 0;
  test::Process proxy;
  std::string token;         // a valid access token for direct logins
  pid_t dovecot_group = -1;  // for its CPU time
  std::vector<std::string> swarm_logins_;

  explicit Env(bool high_performance_login = true) {
    test::DovecotOptions options;
    options.high_performance_login = high_performance_login;
    dovecot =
        std::make_unique<test::DovecotServer>(peer.introspect_url(), legacy, legacy_pass, options);
    tls_port = test::free_port();
    config = dir.path() / "imap-oauth2-proxy.toml";
    write_config(config, dovecot->imaps_port(), dovecot->ca_file());
    const auto refresh = peer.add_account(alice);
    const auto r = test::run_cli(
        config, {"account", "add", alice, "--refresh-token-stdin", "--local-password-stdin"},
        refresh + "\n" + alice_local + "\n");
    if (r.exit_code != 0) die("account add failed: " + r.err);
    const auto t = test::run_cli(config, {"token", alice});
    if (t.exit_code != 0) die("token failed: " + t.err);
    token = t.out.substr(0, t.out.find_last_not_of("\r\n") + 1);
    dovecot_group = find_dovecot_master(dovecot->mail_root().parent_path() / "dovecot.conf");
    if (dovecot_group > 0 && ::getpgid(dovecot_group) != dovecot_group) dovecot_group = -1;
  }

  // A proxy config at `path` (in dir: the same database, accounts and certificates for every
  // config) whose upstream is 127.0.0.1:`upstream_port` as "localhost", trusting `ca_file`.
  void write_config(const fs::path& path, int upstream_port, const fs::path& ca_file) const {
    std::ofstream(path) << "[server]\n"
                        << "listen_tls = \"127.0.0.1:" << tls_port << "\"\n"
                        << "certificate = \"certs/server.crt\"\n"
                        << "private_key = \"certs/server.key\"\n"
                        << "[upstream]\n"
                        << "host = \"localhost\"\n"
                        << "port = " << upstream_port << "\n"
                        << "ca_file = \"" << ca_file.string() << "\"\n"
                        << "timeout = \"30s\"\n"
                        << probe_line() << "[oauth]\n"
                        << "token_endpoint = \"" << peer.token_url() << "\"\n"
                        << "client_id = \"test-client\"\n"
                        << "http_timeout = \"5s\"\n"
                        << "[redis]\n"
                        << "url = \"" << redis.url() << "\"\n"
                        << "[log]\nlevel = \"info\"\n";
  }

  // The LOGIN command of each of the swarm_accounts accounts, which are added on first use.
  std::vector<std::string> swarm_logins() {
    if (swarm_logins_.empty()) {
      for (int i = 0; i < swarm_accounts; ++i) {
        const std::string email = "swarm" + std::to_string(i) + "@example.com";
        const std::string pass = "swarm-pass-" + std::to_string(i);
        const auto refresh = peer.add_account(email);
        const auto r = test::run_cli(
            config, {"account", "add", email, "--refresh-token-stdin", "--local-password-stdin"},
            refresh + "\n" + pass + "\n");
        if (r.exit_code != 0) die("account add failed: " + r.err);
        swarm_logins_.push_back("a LOGIN " + email + " " + pass + "\r\n");
      }
    }
    return swarm_logins_;
  }

  fs::path proxy_ca() const { return certs::ca_certificate_path(dir.path() / "certs/server.crt"); }

  // `serve` with `cfg` (default: the Dovecot config), once it accepts on tls_port.
  void start_proxy(const fs::path& cfg = {}) {
    const fs::path& use = cfg.empty() ? config : cfg;
    proxy = test::Process::start({test::binary_path(), "serve", "--config", use.string()},
                                 dir.path() / "proxy.log");
    const auto deadline = Clock::now() + 15s;
    while (Clock::now() < deadline) {
      const int fd = tcp_socket(false);
      const auto addr = loopback(tls_port);
      const bool up = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
      ::close(fd);
      if (up && fs::exists(proxy_ca())) return;
      if (!proxy.running()) break;
      std::this_thread::sleep_for(20ms);
    }
    die("the proxy did not start; its log:\n" + slurp(dir.path() / "proxy.log"));
  }

  void stop_proxy() {
    proxy.signal(SIGTERM);
    if (!proxy.wait(10s)) proxy.kill_and_wait();
  }
};

std::string make_message(int index, std::size_t size) {
  std::string m = "From: bench@example.com\r\nTo: " + alice + "\r\nSubject: bench message " +
                  std::to_string(index) + "\r\nMessage-ID: <bench-" + std::to_string(index) +
                  "@example.com>\r\nContent-Type: application/octet-stream\r\n"
                  "Content-Transfer-Encoding: base64\r\n\r\n";
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(index + 1);
  m.reserve(size + 80);
  while (m.size() + 78 <= size) {  // 76 characters + CRLF per line, like real attachments
    for (int i = 0; i < 76; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      m.push_back(alphabet[x & 63]);
    }
    m += "\r\n";
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Phase 1: throughput.

struct FetchRun {
  double seconds = 0;
  std::uint64_t bytes = 0;
  double proxy_cpu = 0;       // seconds, proxied runs only
  double client_cpu = 0;      // seconds
  double busy_cores = 0;      // the machine's busy CPU seconds / wall seconds
  double dovecot_cpu = 0;     // seconds, all of Dovecot's processes
  std::uint64_t records = 0;  // TLS records the client received during the FETCH
  [[nodiscard]] double mbps() const { return static_cast<double>(bytes) / 1e6 / seconds; }
};

FetchRun fetch_all(Env& env, SSL_CTX* ctx, bool proxied) {
  Conn c;
  const bool ok = proxied
                      ? c.open(ctx, env.tls_port) && c.login(false, alice, alice_local)
                      : c.open(ctx, env.dovecot->imaps_port()) && c.login(true, alice, env.token);
  if (!ok) die(std::string(proxied ? "proxied" : "direct") + " login: " + c.error());
  std::string tagged;
  if (!c.command("s", "SELECT INBOX", tagged) || tagged.rfind("s OK", 0) != 0) {
    die("SELECT: " + tagged + c.error());
  }
  FetchRun r;
  const double cpu0 = proxied ? cpu_seconds(env.proxy.pid()) : 0;
  const double client0 = client_cpu_seconds();
  const auto machine0 = machine_cpu();
  const double dovecot0 = env.dovecot_group > 0 ? group_cpu_seconds(env.dovecot_group) : 0;
  const auto records0 = records_received.load();
  const auto t0 = Clock::now();
  if (!c.command("f", "UID FETCH 1:* (BODY.PEEK[])", tagged, &r.bytes) ||
      tagged.rfind("f OK", 0) != 0) {
    die("FETCH: " + tagged + c.error());
  }
  r.seconds = seconds_since(t0);
  r.records = records_received.load() - records0;
  r.client_cpu = client_cpu_seconds() - client0;
  r.busy_cores = (machine_cpu().first - machine0.first) / r.seconds;
  if (env.dovecot_group > 0) r.dovecot_cpu = group_cpu_seconds(env.dovecot_group) - dovecot0;
  if (proxied) r.proxy_cpu = cpu_seconds(env.proxy.pid()) - cpu0;
  c.logout();
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// ---------------------------------------------------------------------------------------------
// Phase 2: login latency. Milliseconds from connect() to the login's tagged OK, and its parts:
// TCP connect + TLS handshake, then the greeting, then the login command to its tagged OK.

struct LoginTimes {
  double total = 0;
  double tls = 0;
  double greeting = 0;
  double command = 0;
};

// Between measured logins: the previous login's aftermath (Dovecot ending its processes, the
// proxy opening its next spare connection, [upstream] preconnect) is background work on the
// same 2 cores; without a pause it would land on whichever login is measured next, so one path
// would be timed while the other's aftermath runs.
constexpr auto settle = std::chrono::milliseconds(25);

LoginTimes timed_login(Env& env, SSL_CTX* ctx, bool proxied) {
  std::this_thread::sleep_for(settle);
  Conn c;
  auto ms = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const auto t0 = Clock::now();
  bool ok = c.open(ctx, proxied ? env.tls_port : env.dovecot->imaps_port());
  const auto t1 = Clock::now();
  ok = ok && c.greeting();
  const auto t2 = Clock::now();
  ok = ok && (proxied ? c.login_command(false, alice, alice_local)
                      : c.login_command(true, alice, env.token));
  const auto t3 = Clock::now();
  if (!ok) die(std::string(proxied ? "proxied" : "direct") + " login: " + c.error());
  c.logout();
  return {ms(t0, t3), ms(t0, t1), ms(t1, t2), ms(t2, t3)};
}

// ---------------------------------------------------------------------------------------------

int arg(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

std::string arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

const char* verdict(bool ok) { return ok ? "MET" : "MISSED"; }

struct ThroughputResult {
  double direct_mbps = 0;  // medians
  double proxy_mbps = 0;
  double direct_best = 0;  // best of the rounds: least disturbed by other load on the machine
  double proxy_best = 0;
  double cpu_per_100mb = 0;
  double direct_all_cpu = 0;  // CPU s per 100 MB of every party: client + Dovecot (+ proxy)
  double proxy_all_cpu = 0;
  double direct_records_per_mb = 0;  // as Dovecot frames it: what the proxy reads upstream
  double proxy_records_per_mb = 0;   // as the proxy frames it for its client
  // The proxy's system calls per MB relayed (strace -c over one untimed proxied FETCH).
  double reads_per_mb = 0;   // read, recvfrom, recvmsg, readv
  double writes_per_mb = 0;  // write, sendto, sendmsg, writev
  double waits_per_mb = 0;   // epoll_wait, epoll_ctl, poll
};

// Counts the proxy's system calls, every thread, while `run` runs (strace -c, attached then
// detached: slow while attached, so this run is never a timed one). Returns {reads, writes,
// waits}; all zero when strace is missing or cannot attach.
template <class Run>
std::array<double, 3> count_syscalls(pid_t pid, const fs::path& out, Run run) {
  std::vector<std::string> cmd = {"strace", "-qq", "-c", "-o", out.string()};
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    cmd.push_back("-p");
    cmd.push_back(task.path().filename().string());
  }
  auto strace = test::Process::start(cmd, out.string() + ".log");
  std::this_thread::sleep_for(500ms);  // attaching is asynchronous; a bench may wait
  run();
  strace.signal(SIGINT);
  if (!strace.wait(10s)) strace.kill_and_wait();
  std::array<double, 3> calls{0, 0, 0};
  std::istringstream in(slurp(out));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.size() < 5 || f[0].find_first_not_of("0123456789.") != std::string::npos) continue;
    const std::string& name = f.back();
    // "% time seconds usecs/call calls [errors] syscall"
    const double n = std::atof(f[3].c_str());
    if (name == "read" || name == "recvfrom" || name == "recvmsg" || name == "readv") {
      calls[0] += n;
    } else if (name == "write" || name == "sendto" || name == "sendmsg" || name == "writev") {
      calls[1] += n;
    } else if (name == "epoll_wait" || name == "epoll_ctl" || name == "poll") {
      calls[2] += n;
    }
  }
  return calls;
}

ThroughputResult throughput_phase(Env& env, SSL_CTX* proxy_ctx, SSL_CTX* direct_ctx, int messages,
                                  int message_mb, int rounds) {
  const auto size = static_cast<std::size_t>(message_mb) * 1000 * 1000;
  std::printf("delivering %d x %d MB with doveadm save...\n", messages, message_mb);
  std::fflush(stdout);
  for (int i = 0; i < messages; ++i) env.dovecot->deliver(alice, make_message(i, size));

  std::printf("\n== 1. Throughput: UID FETCH 1:* (BODY.PEEK[]), %d x %d MB, %d rounds each ==\n",
              messages, message_mb, rounds);
  const auto warm_direct = fetch_all(env, direct_ctx, false);  // page cache, Dovecot indexes
  const auto warm_proxied = fetch_all(env, proxy_ctx, true);   // also warms the proxy's caches
  if (warm_direct.bytes != warm_proxied.bytes) {
    die("direct and proxied FETCH returned different byte counts: " +
        std::to_string(warm_direct.bytes) + " vs " + std::to_string(warm_proxied.bytes));
  }
  std::printf("warm-up: direct %.1f MB/s, proxy %.1f MB/s (%llu literal bytes each)\n",
              warm_direct.mbps(), warm_proxied.mbps(),
              static_cast<unsigned long long>(warm_direct.bytes));
  std::vector<double> direct_mbps;
  std::vector<double> proxy_mbps;
  double proxy_cpu = 0;
  double proxy_mb = 0;
  double all_cpu[2] = {0, 0};
  double all_mb[2] = {0, 0};
  double records[2] = {0, 0};
  for (int r = 0; r < rounds; ++r) {
    for (const bool proxied : r % 2 == 0 ? std::vector{false, true} : std::vector{true, false}) {
      const auto run = fetch_all(env, proxied ? proxy_ctx : direct_ctx, proxied);
      std::printf(
          "  round %d %-6s %5.1f MB %5.3f s %6.1f MB/s | CPU s: client %5.3f, dovecot %5.3f", r + 1,
          proxied ? "proxy" : "direct", static_cast<double>(run.bytes) / 1e6, run.seconds,
          run.mbps(), run.client_cpu, run.dovecot_cpu);
      if (proxied) std::printf(", proxy %5.3f", run.proxy_cpu);
      std::printf(" | machine busy %.2f/%u cores", run.busy_cores,
                  std::thread::hardware_concurrency());
      all_cpu[proxied] += run.client_cpu + run.dovecot_cpu + run.proxy_cpu;
      all_mb[proxied] += static_cast<double>(run.bytes) / 1e6;
      records[proxied] += static_cast<double>(run.records);
      if (proxied) {
        proxy_cpu += run.proxy_cpu;
        proxy_mb += static_cast<double>(run.bytes) / 1e6;
        proxy_mbps.push_back(run.mbps());
      } else {
        direct_mbps.push_back(run.mbps());
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  ThroughputResult t;
  t.direct_mbps = median(direct_mbps);
  t.proxy_mbps = median(proxy_mbps);
  t.direct_best = *std::max_element(direct_mbps.begin(), direct_mbps.end());
  t.proxy_best = *std::max_element(proxy_mbps.begin(), proxy_mbps.end());
  t.cpu_per_100mb = proxy_cpu / proxy_mb * 100;
  t.direct_all_cpu = all_cpu[0] / all_mb[0] * 100;
  t.proxy_all_cpu = all_cpu[1] / all_mb[1] * 100;
  t.direct_records_per_mb = records[0] / all_mb[0];
  t.proxy_records_per_mb = records[1] / all_mb[1];
  double straced_mb = 0;
  const auto calls = count_syscalls(env.proxy.pid(), env.dir.path() / "strace.txt", [&] {
    straced_mb = static_cast<double>(fetch_all(env, proxy_ctx, true).bytes) / 1e6;
  });
  t.reads_per_mb = calls[0] / straced_mb;
  t.writes_per_mb = calls[1] / straced_mb;
  t.waits_per_mb = calls[2] / straced_mb;
  std::printf(
      "median: direct %.1f MB/s, proxy %.1f MB/s, ratio %.3f; best: direct %.1f, proxy "
      "%.1f, ratio %.3f\n",
      t.direct_mbps, t.proxy_mbps, t.proxy_mbps / t.direct_mbps, t.direct_best, t.proxy_best,
      t.proxy_best / t.direct_best);
  std::printf(
      "CPU s per 100 MB: proxy %.3f; all parties (client + Dovecot [+ proxy]): direct "
      "%.3f, proxied %.3f\n",
      t.cpu_per_100mb, t.direct_all_cpu, t.proxy_all_cpu);
  std::printf(
      "TLS records per MB: upstream side (as Dovecot sends them) %.1f, client side (as the "
      "proxy sends them) %.1f\n"
      "proxy system calls per MB relayed (strace -c, one untimed FETCH): reads %.1f, writes "
      "%.1f, epoll %.1f\n",
      t.direct_records_per_mb, t.proxy_records_per_mb, t.reads_per_mb, t.writes_per_mb,
      t.waits_per_mb);
  return t;
}

struct LatencyResult {
  double d50 = 0, d99 = 0, p50 = 0, p99 = 0;
};

LatencyResult latency_phase(Env& env, SSL_CTX* proxy_ctx, SSL_CTX* direct_ctx, int logins) {
  std::printf(
      "\n== 2. Login latency, warm caches: connect + TLS + greeting + login command to its "
      "tagged OK (LOGOUT untimed), %d each, interleaved ==\n",
      logins);
  timed_login(env, proxy_ctx, true);  // warm: local-password cache and token cache
  timed_login(env, direct_ctx, false);
  std::map<bool, std::vector<LoginTimes>> times;
  for (int i = 0; i < logins; ++i) {
    const bool proxy_first = i % 2 == 1;
    for (const bool proxied : {proxy_first, !proxy_first}) {
      times[proxied].push_back(timed_login(env, proxied ? proxy_ctx : direct_ctx, proxied));
    }
  }
  auto part = [&](bool proxied, double LoginTimes::*field, double q) {
    std::vector<double> v;
    for (const auto& t : times[proxied]) v.push_back(t.*field);
    return percentile(v, q);
  };
  for (const bool proxied : {false, true}) {
    std::printf(
        "%-14s p50 %6.2f ms  p99 %6.2f ms  (min %5.2f, p90 %5.2f) | p50 of parts: "
        "connect+TLS %5.2f, greeting %5.2f, login command %5.2f ms\n",
        proxied ? "proxy LOGIN" : "direct XOAUTH2", part(proxied, &LoginTimes::total, 0.5),
        part(proxied, &LoginTimes::total, 0.99), part(proxied, &LoginTimes::total, 0),
        part(proxied, &LoginTimes::total, 0.9), part(proxied, &LoginTimes::tls, 0.5),
        part(proxied, &LoginTimes::greeting, 0.5), part(proxied, &LoginTimes::command, 0.5));
  }
  LatencyResult l{part(false, &LoginTimes::total, 0.5), part(false, &LoginTimes::total, 0.99),
                  part(true, &LoginTimes::total, 0.5), part(true, &LoginTimes::total, 0.99)};
  std::printf("added by the proxy: p50 %+.2f ms, p99 %+.2f ms\n", l.p50 - l.d50, l.p99 - l.d99);
  return l;
}

// Phase 4 (issue #8): a proxied login with the connection log written vs not written. A second
// proxy process on the same database, Redis and Dovecot runs with [audit] connection_log =
// false; logins alternate between the two in blocks (ABBA), so drift in machine load hits
// both sides alike. Each login's row is queued at close and written by the writer thread while
// the next login runs: what is measured is whether that background writing slows logins.
struct AuditResult {
  double on50 = 0, on99 = 0, off50 = 0, off99 = 0;
};

double timed_proxy_login(SSL_CTX* ctx, int port) {
  Conn c;
  const auto t0 = Clock::now();
  const bool ok = c.open(ctx, port) && c.greeting() && c.login_command(false, alice, alice_local);
  const auto t1 = Clock::now();
  if (!ok) die("proxied login (audit phase): " + c.error());
  c.logout();
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

AuditResult audit_phase(Env& env, SSL_CTX* proxy_ctx, int logins, int block) {
  std::printf(
      "\n== 4. Login latency with the connection log written vs not: %d proxied logins each, "
      "alternating blocks of %d ==\n",
      logins, block);
  const int off_port = test::free_port();
  auto text = slurp(env.config);
  const std::string listen = "127.0.0.1:" + std::to_string(env.tls_port);
  text.replace(text.find(listen), listen.size(), "127.0.0.1:" + std::to_string(off_port));
  text += "[audit]\nconnection_log = false\n";
  const auto off_config = env.dir.path() / "no-audit.toml";
  std::ofstream(off_config) << text;
  test::Process off = test::Process::start(
      {test::binary_path(), "serve", "--config", off_config.string()}, env.dir.path() / "off.log");
  const auto deadline = Clock::now() + 15s;
  for (;;) {
    const int fd = tcp_socket(false);
    const auto addr = loopback(off_port);
    const bool up = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (up) break;
    if (!off.running() || Clock::now() > deadline) {
      die("the audit-off proxy did not start: " + slurp(env.dir.path() / "off.log"));
    }
    std::this_thread::sleep_for(20ms);
  }
  for (int i = 0; i < 20; ++i) {  // warm both: caches, TLS contexts, threads
    timed_proxy_login(proxy_ctx, env.tls_port);
    timed_proxy_login(proxy_ctx, off_port);
  }
  std::vector<double> on;
  std::vector<double> off_times;
  for (int b = 0;
       static_cast<int>(on.size()) < logins || static_cast<int>(off_times.size()) < logins; ++b) {
    const bool audit_first = (b / 2) % 2 == 0;  // ABBA: on off off on on off ...
    const bool audit = (b % 2 == 0) == audit_first;
    auto& into = audit ? on : off_times;
    for (int i = 0; i < block && static_cast<int>(into.size()) < logins; ++i) {
      into.push_back(timed_proxy_login(proxy_ctx, audit ? env.tls_port : off_port));
    }
  }
  off.signal(SIGTERM);
  if (!off.wait(10s)) off.kill_and_wait();
  AuditResult a{percentile(on, 0.5), percentile(on, 0.99), percentile(off_times, 0.5),
                percentile(off_times, 0.99)};
  std::printf("audit on   p50 %6.3f ms  p99 %6.3f ms  (p90 %6.3f)\n", a.on50, a.on99,
              percentile(on, 0.9));
  std::printf("audit off  p50 %6.3f ms  p99 %6.3f ms  (p90 %6.3f)\n", a.off50, a.off99,
              percentile(off_times, 0.9));
  std::printf("difference p50 %+.3f ms, p99 %+.3f ms (target: p99 within 0.2 ms)\n",
              a.on50 - a.off50, a.on99 - a.off99);
  return a;
}

// Phase 5 (issue #9 item 5): login latency direct vs proxy vs proxy with [upstream] prewarm.
// A second proxy process on the same database, Redis and Dovecot runs with prewarm on; the
// three kinds of login are interleaved (the order rotates). After each login to the prewarm
// proxy, the phase waits (polling its log, bounded) for the pool's replacement warm connection,
// so every prewarmed login finds one ready and no warm-up overlaps a measured login.
struct PrewarmResult {
  double d50 = 0, d99 = 0, p50 = 0, p99 = 0, w50 = 0, w99 = 0;
  std::size_t warm_used = 0;
  int logins = 0;
};

void measure_three(Env& env, SSL_CTX* proxy_ctx, SSL_CTX* direct_ctx, int warm_port, int logins,
                   std::vector<double>& direct, std::vector<double>& proxied,
                   std::vector<double>& prewarmed, const std::function<void()>& wait_ready) {
  for (int i = 0; i < logins; ++i) {
    for (int k = 0; k < 3; ++k) {
      switch ((i + k) % 3) {
        case 0:
          direct.push_back(timed_login(env, direct_ctx, false).total);
          break;
        case 1:
          proxied.push_back(timed_login(env, proxy_ctx, true).total);
          break;
        default:
          std::this_thread::sleep_for(settle);  // as timed_login does
          prewarmed.push_back(timed_proxy_login(proxy_ctx, warm_port));
          wait_ready();
      }
    }
  }
}

PrewarmResult prewarm_phase(Env& env, SSL_CTX* proxy_ctx, SSL_CTX* direct_ctx, int logins) {
  std::printf(
      "\n== 5. Login latency direct vs proxy vs proxy with [upstream] prewarm = true: %d each, "
      "interleaved ==\n",
      logins);
  const int warm_port = test::free_port();
  auto text = slurp(env.config);
  const std::string listen = "127.0.0.1:" + std::to_string(env.tls_port);
  text.replace(text.find(listen), listen.size(), "127.0.0.1:" + std::to_string(warm_port));
  const std::string upstream = "[upstream]\n";
  text.replace(text.find(upstream), upstream.size(), upstream + "prewarm = true\n");
  const auto warm_config = env.dir.path() / "prewarm.toml";
  std::ofstream(warm_config) << text;
  const auto warm_log = env.dir.path() / "prewarm.log";
  test::Process warm = test::Process::start(
      {test::binary_path(), "serve", "--config", warm_config.string()}, warm_log);
  const auto started = Clock::now() + 15s;
  for (;;) {
    const int fd = tcp_socket(false);
    const auto addr = loopback(warm_port);
    const bool up = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (up) break;
    if (!warm.running() || Clock::now() > started) {
      die("the prewarm proxy did not start: " + slurp(warm_log));
    }
    std::this_thread::sleep_for(20ms);
  }
  std::size_t expected_ready = 0;
  auto wait_ready = [&] {
    ++expected_ready;
    const auto deadline = Clock::now() + 5s;
    while (test::count_of(slurp(warm_log), "warm connection ready") < expected_ready &&
           Clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
  };
  std::vector<double> direct, proxied, prewarmed;
  try {
    timed_proxy_login(proxy_ctx, warm_port);  // fills its caches; the pool makes the first one
    wait_ready();
    timed_login(env, proxy_ctx, true);
    timed_login(env, direct_ctx, false);
    measure_three(env, proxy_ctx, direct_ctx, warm_port, logins, direct, proxied, prewarmed,
                  wait_ready);
  } catch (const std::exception& e) {
    auto tail = [](const fs::path& p) {
      const auto text = slurp(p);
      return text.substr(text.size() > 3000 ? text.size() - 3000 : 0);
    };
    die(std::string(e.what()) + "\n-- proxy log:\n" + tail(env.dir.path() / "proxy.log") +
        "\n-- prewarm proxy log:\n" + tail(warm_log));
  }
  PrewarmResult r;
  r.logins = logins;
  r.warm_used = test::count_of(slurp(warm_log), "logged in on a prewarmed upstream connection");
  warm.signal(SIGTERM);
  if (!warm.wait(10s)) warm.kill_and_wait();
  r.d50 = percentile(direct, 0.5);
  r.d99 = percentile(direct, 0.99);
  r.p50 = percentile(proxied, 0.5);
  r.p99 = percentile(proxied, 0.99);
  r.w50 = percentile(prewarmed, 0.5);
  r.w99 = percentile(prewarmed, 0.99);
  std::printf("direct XOAUTH2   p50 %6.2f ms  p99 %6.2f ms\n", r.d50, r.d99);
  std::printf("proxy LOGIN      p50 %6.2f ms  p99 %6.2f ms\n", r.p50, r.p99);
  std::printf(
      "proxy+prewarm    p50 %6.2f ms  p99 %6.2f ms  (%zu of %d logins took a warm "
      "connection)\n",
      r.w50, r.w99, r.warm_used, logins + 1);
  return r;
}

struct ConcurrencyResult {
  int sessions = 0;
  int noop_ok = 0;
  double per_session_kib = 0;
};

// A fresh proxy process started with `cfg` ("" for the Dovecot config), one warm-up login,
// VmRSS; `sessions` idle sessions logged in (swarm_in_flight at a time) and serviced 1 s; VmRSS
// again; NOOP on every session. `upstream_note`, when given, says what the upstream sees once all
// are in.
ConcurrencyResult hold_idle_sessions(Env& env, SSL_CTX* proxy_ctx, int sessions,
                                     const fs::path& cfg,
                                     const std::function<std::string()>& upstream_note) {
  const auto logins = env.swarm_logins();  // added (once) before the proxy starts
  env.stop_proxy();
  env.start_proxy(cfg);
  timed_login(env, proxy_ctx, true);  // warm the fresh process: caches, TLS contexts, threads
  // And each swarm account once: its first login runs scrypt (tens of MiB, which the allocator
  // may keep) and fetches its token, which are not what an idle session costs.
  for (const auto& login : logins) {
    Conn warm;
    std::string tagged;
    if (!warm.open(proxy_ctx, env.tls_port) || !warm.greeting() ||
        !warm.command("a", login.substr(2, login.size() - 4), tagged) ||
        tagged.rfind("a OK", 0) != 0) {
      die("warm-up login of a swarm account: " + warm.error() + tagged);
    }
    warm.logout();
  }
  std::this_thread::sleep_for(500ms);
  const pid_t pid = env.proxy.pid();
  const long rss_before = status_kib(pid, "VmRSS");
  const int fds_before = fd_count(pid);
  SSL_CTX* swarm_ctx = make_client_ctx(env.proxy_ca(), true);
  ConcurrencyResult c{sessions};
  long rss_after = 0;
  long rss_after_noop = 0;
  int logged_in = 0;
  {
    test::ImapSwarm swarm(swarm_ctx, env.tls_port, sessions, logins);
    const auto t0 = Clock::now();
    logged_in = swarm.login_all(swarm_in_flight, 600s);
    const double login_seconds = seconds_since(t0);
    swarm.idle_for(1000ms);
    rss_after = status_kib(pid, "VmRSS");
    const int fds_after = fd_count(pid);
    const int still = swarm.count(test::ImapSwarm::State::ready);
    const std::string note = upstream_note ? upstream_note() : std::string();
    c.noop_ok = swarm.noop_all(300s);
    rss_after_noop = status_kib(pid, "VmRSS");
    std::printf(
        "logged in %d/%d in %.1f s (%d in flight, %d accounts); still open after 1 s idle: %d; "
        "proxy fds %d -> %d%s\n",
        logged_in, sessions, login_seconds, swarm_in_flight, swarm_accounts, still, fds_before,
        fds_after, note.c_str());
    if (c.noop_ok != sessions) std::printf("first failure: %s\n", swarm.first_error().c_str());
  }
  SSL_CTX_free(swarm_ctx);
  c.per_session_kib =
      static_cast<double>(rss_after - rss_before) / static_cast<double>(std::max(1, logged_in));
  std::printf(
      "proxy VmRSS: before %ld KiB, after %ld KiB (after the NOOPs %ld KiB): %.1f KiB per "
      "session\n",
      rss_before, rss_after, rss_after_noop, c.per_session_kib);
  std::printf("NOOP answered OK on %d/%d sessions (dropped: %d)\n", c.noop_ok, sessions,
              sessions - c.noop_ok);
  return c;
}

ConcurrencyResult concurrency_phase(Env& env, SSL_CTX* proxy_ctx, int sessions) {
  std::printf(
      "\n== 3. Concurrency: %d idle authenticated sessions through a fresh proxy process "
      "==\n",
      sessions);
  return hold_idle_sessions(env, proxy_ctx, sessions, {}, {});
}

// Phase 3 again, with the light upstream (tests/support/light_imap_server.hpp, in this process)
// instead of Dovecot, which cannot hold that many sessions here; afterwards the proxy runs with
// the Dovecot config again.
ConcurrencyResult light_phase(Env& env, SSL_CTX* proxy_ctx, int sessions) {
  std::printf(
      "\n== 3b. Concurrency: %d idle authenticated sessions through a fresh proxy process, "
      "light upstream ==\n",
      sessions);
  test::LightImapServer light;
  const fs::path cfg = env.dir.path() / "light-upstream.toml";
  env.write_config(cfg, light.port(), light.ca_file());
  auto c = hold_idle_sessions(env, proxy_ctx, sessions, cfg, [&] {
    return "; light upstream: " + std::to_string(light.authenticated_sessions()) +
           " sessions logged in, " + std::to_string(light.live_sessions()) + " open";
  });
  std::printf("light upstream: %llu logins (warm-ups included), %llu refused\n",
              static_cast<unsigned long long>(light.logins()),
              static_cast<unsigned long long>(light.failed_logins()));
  env.stop_proxy();
  env.start_proxy();
  return c;
}

int run(int argc, char** argv) {
  const int messages = arg(argc, argv, "--messages", 20);
  const int message_mb = arg(argc, argv, "--message-mb", 10);
  const int rounds = arg(argc, argv, "--rounds", 5);
  const int logins = arg(argc, argv, "--logins", 200);
  const int sessions = arg(argc, argv, "--sessions", 2000);
  int light_sessions = arg(argc, argv, "--light-sessions", 10000);
  const std::string phases = arg(argc, argv, "--phases", "tlci");
  upstream_probe = arg(argc, argv, "--probe", "");
  const int audit_logins = arg(argc, argv, "--audit-logins", 2000);
  const int audit_block = arg(argc, argv, "--audit-block", 100);
  const auto bench_start = Clock::now();
  ::signal(SIGPIPE, SIG_IGN);

  // File descriptors for this process and, inherited, for Dovecot and the proxy: the proxy
  // needs 2 per session, Dovecot (imap-login + imap processes) more, this client 1. Without
  // CAP_SYS_RESOURCE only the soft limit can rise (to the hard one).
  rlimit nofile{65536, 65536};
  if (::setrlimit(RLIMIT_NOFILE, &nofile) != 0) {
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  std::printf("proxy_bench: proxy binary %s, RLIMIT_NOFILE %llu, %u CPUs\n",
              test::binary_path().c_str(), static_cast<unsigned long long>(nofile.rlim_cur),
              std::thread::hardware_concurrency());
  if (nofile.rlim_cur < static_cast<rlim_t>(3 * sessions + 100)) {
    die("RLIMIT_NOFILE too low for " + std::to_string(sessions) + " sessions");
  }
  // Phase i: the light upstream lives in this process, so each session holds two descriptors
  // here (client and upstream side) and two in the proxy; the hard limit caps the count.
  const int light_cap =
      static_cast<int>((nofile.rlim_cur - std::min<rlim_t>(nofile.rlim_cur, 200)) / 2);
  if (phases.find('i') != std::string::npos && light_sessions > light_cap) {
    std::printf(
        "light-upstream phase: %d sessions, not %d: RLIMIT_NOFILE %llu allows no more (2 "
        "descriptors a session in this process and in the proxy; the hard limit cannot rise "
        "without CAP_SYS_RESOURCE)\n",
        light_cap, light_sessions, static_cast<unsigned long long>(nofile.rlim_cur));
    light_sessions = light_cap;
  }

  std::printf("load average before: %s", slurp("/proc/loadavg").c_str());
  std::printf("setting up: token endpoint, redis-server, Dovecot, account, proxy...\n");
  std::fflush(stdout);
  Env env;
  env.start_proxy();
  SSL_CTX* proxy_ctx = make_client_ctx(env.proxy_ca(), false);
  SSL_CTX* direct_ctx = make_client_ctx(env.dovecot->ca_file(), false);

  std::optional<ThroughputResult> t;
  std::optional<LatencyResult> l;
  std::optional<ConcurrencyResult> c;
  std::optional<ConcurrencyResult> li;
  std::optional<AuditResult> a;
  std::optional<PrewarmResult> w;
  // The second Dovecot setup for throughput: its default, high-security login mode.
  std::optional<ThroughputResult> t_default;
  if (phases.find('t') != std::string::npos) {
    std::printf("\n-- Dovecot imap-login in high-performance mode (service_count = 0) --\n");
    t = throughput_phase(env, proxy_ctx, direct_ctx, messages, message_mb, rounds);
    std::printf("\n-- Dovecot imap-login in its default mode (service_count = 1) --\n");
    std::printf("setting up a second token endpoint, redis-server, Dovecot and proxy...\n");
    Env second(false);
    second.start_proxy();
    SSL_CTX* second_proxy_ctx = make_client_ctx(second.proxy_ca(), false);
    SSL_CTX* second_direct_ctx = make_client_ctx(second.dovecot->ca_file(), false);
    t_default =
        throughput_phase(second, second_proxy_ctx, second_direct_ctx, messages, message_mb, rounds);
    SSL_CTX_free(second_proxy_ctx);
    SSL_CTX_free(second_direct_ctx);
    second.stop_proxy();
  }
  if (phases.find('l') != std::string::npos) l = latency_phase(env, proxy_ctx, direct_ctx, logins);
  if (phases.find('a') != std::string::npos) {
    a = audit_phase(env, proxy_ctx, audit_logins, audit_block);
  }
  if (phases.find('w') != std::string::npos) w = prewarm_phase(env, proxy_ctx, direct_ctx, logins);
  if (phases.find('c') != std::string::npos) c = concurrency_phase(env, proxy_ctx, sessions);
  if (phases.find('i') != std::string::npos) li = light_phase(env, proxy_ctx, light_sessions);

  std::printf("\n== Summary (MB = 10^6 bytes; proxy: %s, log level info) ==\n",
              test::binary_path().c_str());
  std::printf("%-36s %10s %10s %13s %10s %7s\n", "metric", "direct", "proxy", "ratio/added",
              "target", "result");
  for (const auto& [setup, tr] :
       {std::pair{"Dovecot service_count=0", t}, std::pair{"Dovecot service_count=1", t_default}}) {
    if (!tr) continue;
    std::printf("[%s]\n", setup);
    const double ratio = tr->proxy_mbps / tr->direct_mbps;
    std::printf("%-36s %10.1f %10.1f %12.3fx %10s %7s\n", "FETCH throughput, MB/s (median)",
                tr->direct_mbps, tr->proxy_mbps, ratio, ">= 0.95x", verdict(ratio >= 0.95));
    const double best = tr->proxy_best / tr->direct_best;
    std::printf("%-36s %10.1f %10.1f %12.3fx %10s %7s\n", "FETCH throughput, MB/s (best round)",
                tr->direct_best, tr->proxy_best, best, ">= 0.95x", verdict(best >= 0.95));
    std::printf("%-36s %10s %10.3f %13s %10s %7s\n", "proxy CPU s per 100 MB relayed", "-",
                tr->cpu_per_100mb, "-", "<= 0.3 s",
                // 0: nothing measured (IOP_BINARY a wrapper such as perf: its own CPU is read).
                tr->cpu_per_100mb > 0 ? verdict(tr->cpu_per_100mb <= 0.3) : "n/a");
    std::printf("%-36s %10.3f %10.3f %12.3fx %10s %7s\n", "CPU s/100 MB, client+Dovecot[+proxy]",
                tr->direct_all_cpu, tr->proxy_all_cpu, tr->proxy_all_cpu / tr->direct_all_cpu, "-",
                "-");
    std::printf("%-36s %10.1f %10.1f %13s %10s %7s\n", "TLS records per MB received",
                tr->direct_records_per_mb, tr->proxy_records_per_mb, "-", "-", "-");
    std::printf("%-36s %10s %10.1f %13s %10s %7s\n", "proxy read/write syscalls per MB", "-",
                tr->reads_per_mb + tr->writes_per_mb, "-", "-", "-");
  }
  if (l) {
    std::printf("%-36s %10.2f %10.2f %10.2f ms %10s %7s\n", "login p50, ms (connect..tagged OK)",
                l->d50, l->p50, l->p50 - l->d50, "<= +1 ms", verdict(l->p50 - l->d50 <= 1.0));
    std::printf("%-36s %10.2f %10.2f %10.2f ms %10s %7s\n", "login p99, ms (connect..tagged OK)",
                l->d99, l->p99, l->p99 - l->d99, "-", "-");
  }
  if (a) {
    std::printf("%-36s %10.3f %10.3f %10.3f ms %10s %7s\n", "login p50, ms, audit off / on",
                a->off50, a->on50, a->on50 - a->off50, "-", "-");
    std::printf("%-36s %10.3f %10.3f %10.3f ms %10s %7s\n", "login p99, ms, audit off / on",
                a->off99, a->on99, a->on99 - a->off99, "<= 0.2 ms",
                verdict(a->on99 - a->off99 <= 0.2));
  }
  if (w) {
    std::printf("%-36s %10.2f %10.2f %10.2f ms %10s %7s\n", "login p50, ms, direct / prewarm",
                w->d50, w->w50, w->w50 - w->d50, "< direct", verdict(w->w50 < w->d50));
    std::printf("%-36s %10.2f %10.2f %10.2f ms %10s %7s\n", "login p99, ms, direct / prewarm",
                w->d99, w->w99, w->w99 - w->d99, "-", "-");
    std::printf("%-36s %10.2f %10.2f %10.2f ms %10s %7s\n", "login p50, ms, direct / proxy", w->d50,
                w->p50, w->p50 - w->d50, "-", "-");
  }
  // Issue #9's goal: <= 48 KiB an idle session, at 2,000 (Dovecot) and 10,000 (light upstream).
  for (const auto& [r, upstream] : {std::pair{&c, "Dovecot"}, std::pair{&li, "light"}}) {
    if (!*r) continue;
    const auto& x = **r;
    const std::string what =
        std::string("RSS/idle session, KiB, ") + std::to_string(x.sessions) + " " + upstream;
    std::printf("%-36s %10s %10.1f %13s %10s %7s\n", what.c_str(), "-", x.per_session_kib, "-",
                "<= 48 KiB", verdict(x.per_session_kib <= 48));
    std::printf("%-36s %10s %5d/%-5d %12s %10s %7s\n", "idle sessions alive (NOOP OK)", "-",
                x.noop_ok, x.sessions, "-", "all", verdict(x.noop_ok == x.sessions));
  }
  std::printf("total bench time %.0f s; load average now: %s", seconds_since(bench_start),
              slurp("/proc/loadavg").c_str());
  std::fflush(stdout);

  SSL_CTX_free(proxy_ctx);
  SSL_CTX_free(direct_ctx);
  env.stop_proxy();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "proxy_bench: %s\n", e.what());
    return 1;
  }
}
