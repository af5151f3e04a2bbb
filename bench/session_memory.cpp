// Where an idle proxied session's memory goes (issue #9, item 1): N loopback TLS connections
// made of the proxy's own parts (ImapStream, its OpenSSL settings and contexts), each side
// logged in the way a session is (a short command and answer), then left idle the way the
// relay leaves them (a pending wait_readable(), no buffer). Heap in use is read from malloc
// (mallinfo2) before and after, and every OpenSSL allocation is counted by side:
//
// - "client-facing" is the proxy's server side (its TLS server context, what a mail client
//   connects to), on one thread;
// - "upstream" is the proxy's client side (its TLS client context, certificate verified, what
//   it keeps towards the IMAP server), on another thread.
//
//   ninja -C build session_memory && build/bench/session_memory [N=2000]
//
// What the proxy holds per session beyond these (session and relay coroutine frames, the
// connection record, strings) is the proxy_bench figure minus this one.

#include <malloc.h>
#include <openssl/crypto.h>
#include <sys/resource.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "certs/local_cert.hpp"
#include "certs/tls_context.hpp"
#include "common/asio.hpp"
#include "proxy/imap_stream.hpp"
#include "tests/support/process.hpp"

using namespace iop;
using error_code = boost::system::error_code;

namespace {

// OpenSSL's allocations, live bytes by the side (thread) that made them. A 16-byte header
// keeps the size and side, so a free on any thread is charged to the side that allocated.
enum Side : int { other = 0, client_facing = 1, upstream = 2 };
thread_local Side current_side = other;
std::atomic<long long> live[3];

struct Header {
  std::size_t size;
  int side;
  int pad;
};
static_assert(sizeof(Header) == 16);

void* counted_malloc(std::size_t n, const char*, int) {
  auto* h = static_cast<Header*>(std::malloc(n + sizeof(Header)));
  if (h == nullptr) return nullptr;
  h->size = n;
  h->side = current_side;
  live[h->side] += static_cast<long long>(n);
  return h + 1;
}

void counted_free(void* p, const char*, int) {
  if (p == nullptr) return;
  auto* h = static_cast<Header*>(p) - 1;
  live[h->side] -= static_cast<long long>(h->size);
  std::free(h);
}

void* counted_realloc(void* p, std::size_t n, const char* f, int l) {
  if (p == nullptr) return counted_malloc(n, f, l);
  if (n == 0) {
    counted_free(p, f, l);
    return nullptr;
  }
  auto* h = static_cast<Header*>(p) - 1;
  const auto old = h->size;
  const int side = h->side;
  auto* moved = static_cast<Header*>(std::realloc(h, n + sizeof(Header)));
  if (moved == nullptr) return nullptr;
  moved->size = n;
  live[side] += static_cast<long long>(n) - static_cast<long long>(old);
  return moved + 1;
}

long long heap_in_use() { return static_cast<long long>(mallinfo2().uordblks); }

long long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return 0;
}

std::atomic<int> ready{0};
std::atomic<int> failed{0};

// The proxy's client-facing side of one session: TLS accept, read the "login", answer it, then
// idle as the relay does.
awaitable<void> serve_one(std::shared_ptr<proxy::ImapStream> s) {
  error_code ec;
  co_await s->accept_tls(ec);
  std::array<char, 256> buffer{};
  std::size_t n = 0;
  if (!ec) n = co_await s->read_some(net::buffer(buffer), ec);
  if (!ec) co_await s->write_all(net::buffer(std::string_view("a OK LOGIN completed\r\n")), ec);
  if (ec || n == 0) {
    ++failed;
    co_return;
  }
  ++ready;
  co_await s->wait_readable(ec);  // idle until the end
}

// The proxy's upstream side: TLS connect with verification, a command, its answer, idle.
awaitable<void> connect_one(std::shared_ptr<proxy::ImapStream> s, tcp::endpoint to) {
  error_code ec;
  co_await s->socket().async_connect(to, net::redirect_error(net::use_awaitable, ec));
  if (!ec) co_await s->connect_tls("localhost", ec);
  if (!ec) co_await s->write_all(net::buffer(std::string_view("a LOGIN u p\r\n")), ec);
  std::array<char, 256> buffer{};
  std::size_t n = 0;
  if (!ec) n = co_await s->read_some(net::buffer(buffer), ec);
  if (ec || n == 0) {
    ++failed;
    co_return;
  }
  ++ready;
  co_await s->wait_readable(ec);
}

}  // namespace

int main(int argc, char** argv) {
  const int sessions = argc > 1 ? std::atoi(argv[1]) : 2000;
  if (CRYPTO_set_mem_functions(counted_malloc, counted_realloc, counted_free) != 1) {
    std::fprintf(stderr, "session_memory: OpenSSL allocated before main\n");
    return 1;
  }
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &nofile);

  test::TempDir dir;
  const auto cert = dir.path() / "server.crt";
  const auto key = dir.path() / "server.key";
  if (!certs::ensure_server_certificate(cert, key)) return 1;
  std::shared_ptr<net::ssl::context> server_tls;
  std::shared_ptr<net::ssl::context> client_tls;
  {
    current_side = client_facing;
    server_tls = *certs::make_server_context(cert, key);
    current_side = upstream;
    client_tls = *certs::make_client_context(certs::ca_certificate_path(cert));
    current_side = other;
  }

  net::io_context server_io(1);
  net::io_context client_io(1);
  auto server_work = net::make_work_guard(server_io);
  auto client_work = net::make_work_guard(client_io);
  std::thread server_thread([&] {
    current_side = client_facing;
    server_io.run();
  });
  std::thread client_thread([&] {
    current_side = upstream;
    client_io.run();
  });

  tcp::acceptor acceptor(server_io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  acceptor.listen(4096);
  const auto endpoint = acceptor.local_endpoint();
  std::vector<std::shared_ptr<proxy::ImapStream>> server_streams;
  std::vector<std::shared_ptr<proxy::ImapStream>> client_streams;

  // A few warm-up connections first: one-time allocations (cipher fetches, thread caches) are
  // not per-session memory.
  const auto connect_batch = [&](int count) {
    const int base = ready.load() + failed.load();
    for (int i = 0; i < count; ++i) {
      auto server = std::make_shared<proxy::ImapStream>(tcp::socket(server_io), *server_tls);
      auto client = std::make_shared<proxy::ImapStream>(tcp::socket(client_io), *client_tls);
      server_streams.push_back(server);
      client_streams.push_back(client);
      std::promise<void> accepted;
      acceptor.async_accept(server->socket(), [&accepted](error_code) { accepted.set_value(); });
      net::co_spawn(client_io, connect_one(client, endpoint), net::detached);
      accepted.get_future().wait();
      net::co_spawn(server_io, serve_one(server), net::detached);
      if (i % 64 == 63) {  // at most 64 handshakes in flight
        while (ready.load() + failed.load() < base + 2 * (i + 1)) std::this_thread::yield();
      }
    }
    while (ready.load() + failed.load() < base + 2 * count) std::this_thread::yield();
  };
  connect_batch(16);
  malloc_trim(0);
  const long long heap0 = heap_in_use();
  const long long rss0 = rss_kib();
  const long long ssl0[3] = {live[0].load(), live[1].load(), live[2].load()};

  connect_batch(sessions);
  const long long heap1 = heap_in_use();
  const long long rss1 = rss_kib();
  const double n = sessions;
  const double facing = static_cast<double>(live[client_facing] - ssl0[client_facing]) / n / 1024;
  const double up = static_cast<double>(live[upstream] - ssl0[upstream]) / n / 1024;
  const double heap = static_cast<double>(heap1 - heap0) / n / 1024;
  const double rss = static_cast<double>(rss1 - rss0) / n;

  std::printf(
      "session_memory: %d idle TLS sessions, each a client-facing and an upstream side "
      "(failed: %d)\n",
      sessions, failed.load());
  std::printf("per session, KiB:\n");
  std::printf("  OpenSSL, client-facing side (server context)     %6.2f\n", facing);
  std::printf("  OpenSSL, upstream side (client context)          %6.2f\n", up);
  std::printf("  everything else (2 sockets: Asio reactor state,  %6.2f\n", heap - facing - up);
  std::printf("    2 ImapStream objects, 2 pending coroutine frames and waits)\n");
  std::printf("  heap in use (malloc), total                      %6.2f\n", heap);
  std::printf("  RSS                                              %6.2f\n", rss);
  std::printf("  RSS beyond the heap in use (malloc's free space   %6.2f\n", rss - heap);
  std::printf("    and fragmentation left by handshakes, page granularity)\n");

  if (argc > 2 && std::string(argv[2]) == "--exit-idle") {
    std::fflush(stdout);
    std::quick_exit(0);  // for a heap profiler: everything still allocated is the idle state
  }
  for (auto& s : server_streams) net::post(server_io, [s] { s->close(); });
  for (auto& s : client_streams) net::post(client_io, [s] { s->close(); });
  server_work.reset();
  client_work.reset();
  server_thread.join();
  client_thread.join();
  return failed.load() == 0 ? 0 : 1;
}
