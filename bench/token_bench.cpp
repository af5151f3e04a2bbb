// ensure_fresh_token latency and throughput against real peers on loopback: redis-server, the
// test token endpoint, SQLite in a temp folder. Each path is measured next to its baseline, the
// bare operation underneath it (a hiredis GET, a SQLite SELECT, a curl POST), in the same run.
// Then the database paths again with the store on PostgreSQL (issue #10: a cluster of its own,
// started like the tests' one), next to the SQLite figures of the same run.
//
//   build/bench/token_bench [iterations]

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "auth/http_client.hpp"
#include "auth/token_service.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/run_coro.hpp"
#include "tests/support/test_database.hpp"
#include "tests/support/token_endpoint_peer.hpp"

using namespace iop;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Stats {
  double p50_us = 0;
  double p99_us = 0;
};

Stats summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[static_cast<std::size_t>(q * static_cast<double>(us.size() - 1))];
  };
  return {at(0.50), at(0.99)};
}

template <class F, class Before = void (*)()>
Stats measure(
    int iterations, F&& op, Before before = [] {}) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(iterations));
  for (int i = 0; i < iterations; ++i) {
    before();  // untimed setup
    const auto start = Clock::now();
    op(i);
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  return summarize(std::move(samples));
}

void row(const char* name, Stats s, Stats base, const char* base_name) {
  std::printf("%-34s p50 %9.1f us  p99 %9.1f us   | baseline %-22s p50 %8.1f us  ratio %5.2fx\n",
              name, s.p50_us, s.p99_us, base_name, base.p50_us, s.p50_us / base.p50_us);
}

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "token_bench: %s failed\n", what);
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 2000;
  spdlog::set_level(spdlog::level::err);
  test::TempDir dir;
  test::RedisServer redis;
  test::TokenEndpointPeer peer;
  auto key = storage::MasterKey::create(dir.path() / "master.key").value();
  auto store = storage::CredentialsStore::open(dir.path() / "credentials.db", key).value();
  auto cache = storage::TokenCache::create({redis.url(), "bench:", 250ms}, key).value();
  net::thread_pool pool{4};
  auth::OAuthClientSettings oauth;
  oauth.token_endpoint = peer.token_url();
  oauth.client_id = "test-client";
  auth::TokenEndpoint endpoint(oauth, pool.get_executor());

  const std::string email = "bench@example.com";
  const auto refresh_token = peer.add_account(email);
  storage::Credentials row_in;
  row_in.email = email;
  row_in.refresh_token = Secret(refresh_token);
  row_in.access_token = Secret(std::string(1800, 'a'));  // Microsoft-sized token
  row_in.token_expiry = to_unix_seconds(std::chrono::system_clock::now()) + 7200;
  row_in.refreshed_at_ms = to_unix_millis(std::chrono::system_clock::now());
  require(store->upsert_account(row_in).has_value(), "seeding the account");

  auto make = [&](std::chrono::milliseconds memory_ttl) {
    auth::TokenServiceSettings s;
    s.memory_ttl = memory_ttl;
    s.instance_id = "bench";
    return std::make_unique<auth::TokenService>(*store, cache.get(), endpoint, pool.get_executor(),
                                                s);
  };
  auto with_memory = make(60s);
  auto redis_only = make(0ms);

  // One io_context reused for the sequential measurements, as a proxy's I/O thread would be.
  net::io_context ioc;
  auto call = [&ioc](auth::TokenService& svc, bool force = false) {
    std::optional<Result<auth::FreshToken>> out;
    net::co_spawn(
        ioc,
        force ? svc.refresh_now("bench@example.com") : svc.ensure_fresh_token("bench@example.com"),
        [&out](std::exception_ptr, Result<auth::FreshToken> r) { out = std::move(r); });
    ioc.restart();
    ioc.run();
    if (out && !out->has_value()) {
      std::fprintf(stderr, "token_bench: %s\n", (*out).error().message.c_str());
    }
    if (out && !out->has_value()) {
      std::fprintf(stderr, "token_bench: %s\n", (*out).error().message.c_str());
    }
    require(out && out->has_value(), "ensure_fresh_token");
    return (*out)->source;
  };

  // Baselines.
  redisContext* raw = redisConnect("127.0.0.1", redis.port());
  require(raw != nullptr && raw->err == 0, "connecting to redis");
  const auto base_redis = measure(n, [&](int) {
    auto* reply =
        static_cast<redisReply*>(redisCommand(raw, "GET %s", "bench:token:bench@example.com"));
    freeReplyObject(reply);
  });
  sqlite3* db = nullptr;
  sqlite3_open((dir.path() / "credentials.db").c_str(), &db);
  const auto base_sqlite = measure(n, [&](int) {
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, "SELECT * FROM mail_credentials WHERE email = ?", -1, &stmt, nullptr);
    sqlite3_bind_text(stmt, 1, "bench@example.com", -1, SQLITE_STATIC);
    sqlite3_step(stmt);
    sqlite3_finalize(stmt);
  });
  const int refresh_n = std::max(50, n / 20);
  // The bare HTTP exchange under a refresh: the same grant, posted with no service around it.
  const auto base_post = measure(refresh_n, [&](int) {
    auto r = auth::post_form(peer.token_url(),
                             {{"client_id", Secret("test-client")},
                              {"grant_type", Secret("refresh_token")},
                              {"refresh_token", Secret(refresh_token)},
                              {"scope", Secret(oauth.scope)}},
                             {});
    require(r.has_value() && r->status == 200, "baseline POST");
  });
  const auto base_noop = measure(n, [&](int) {
    net::co_spawn(
        ioc, []() -> awaitable<int> { co_return 1; }, [](std::exception_ptr, int) {});
    ioc.restart();
    ioc.run();
  });

  require(call(*with_memory) != auth::TokenSource::refresh, "warm-up");
  const auto memory_hit = measure(
      n, [&](int) { require(call(*with_memory) == auth::TokenSource::memory, "memory hit"); });
  const auto redis_hit =
      measure(n, [&](int) { require(call(*redis_only) == auth::TokenSource::redis, "redis hit"); });
  const auto miss = measure(
      n, [&](int) { require(call(*redis_only) == auth::TokenSource::database, "redis miss"); },
      [&] { cache->erase(email); });
  const auto refresh = measure(
      refresh_n,
      [&](int iteration) {
        const auto source = call(*redis_only, true);
        if (source != auth::TokenSource::refresh) {
          std::fprintf(stderr, "token_bench: refresh %d answered from %s\n", iteration,
                       std::string(storage::to_string(source)).c_str());
        }
        require(source == auth::TokenSource::refresh, "refresh");
      },
      // A forced refresh may share a token obtained in the same millisecond it was asked for.
      [] { std::this_thread::sleep_for(2ms); });

  std::printf("ensure_fresh_token, %d iterations (refresh: %d), access token %zu bytes\n", n,
              refresh_n, row_in.access_token.size());
  row("first-level (memory) hit", memory_hit, base_noop, "co_spawn+run no-op");
  row("Redis hit", redis_hit, base_redis, "hiredis GET");
  row("Redis miss -> database -> Redis", miss, base_sqlite, "SQLite SELECT");
  row("refresh (loopback endpoint)", refresh, base_post, "curl POST");

  // The same database paths with the store on PostgreSQL, against the SQLite figures above.
  if (auto why = test::engine_unavailable(test::Engine::postgresql)) {
    std::printf("PostgreSQL: not measured (%s)\n", why->c_str());
  } else {
    const test::TestDatabase pg(test::Engine::postgresql, dir.path());
    auto pg_store = pg.open_store(key).value();
    require(pg_store->upsert_account(row_in).has_value(), "seeding the PostgreSQL account");
    auth::TokenServiceSettings s;
    s.memory_ttl = 0ms;
    s.instance_id = "bench-pg";
    auth::TokenService pg_service(*pg_store, cache.get(), endpoint, pool.get_executor(), s);
    cache->erase(email);
    require(call(pg_service) != auth::TokenSource::refresh, "PostgreSQL warm-up");
    const auto pg_miss = measure(
        n,
        [&](int) {
          require(call(pg_service) == auth::TokenSource::database, "PostgreSQL redis miss");
        },
        [&] { cache->erase(email); });
    const auto pg_refresh = measure(
        refresh_n,
        [&](int) { require(call(pg_service, true) == auth::TokenSource::refresh, "refresh"); },
        [] { std::this_thread::sleep_for(2ms); });
    std::printf(
        "the store on PostgreSQL (its own cluster on loopback TCP; fsync off, so commits cost less "
        "than on a real server):\n");
    row("Redis miss -> PostgreSQL -> Redis", pg_miss, miss, "the SQLite miss above");
    row("refresh, committed to PostgreSQL", pg_refresh, refresh, "the SQLite refresh");
  }

  // Throughput: 64 concurrent callers on the hit path, 2 I/O threads.
  for (auto* svc : {with_memory.get(), redis_only.get()}) {
    const int callers = 64;
    const int per_caller = svc == with_memory.get() ? 2000 : 200;
    net::io_context tp;
    std::atomic<int> failures{0};
    for (int c = 0; c < callers; ++c) {
      net::co_spawn(
          tp,
          [svc, per_caller, &failures]() -> awaitable<void> {
            for (int i = 0; i < per_caller; ++i) {
              auto r = co_await svc->ensure_fresh_token("bench@example.com");
              if (!r) ++failures;
            }
          },
          [](std::exception_ptr) {});
    }
    const auto start = Clock::now();
    std::thread second([&tp] { tp.run(); });
    tp.run();
    second.join();
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    require(failures == 0, "throughput calls");
    std::printf("%-34s %10.0f calls/s  (64 callers x %d calls, 2 I/O threads)\n",
                svc == with_memory.get() ? "throughput, memory hit" : "throughput, Redis hit",
                callers * per_caller / secs, per_caller);
  }
  redisFree(raw);
  sqlite3_close(db);
  pool.join();
  return 0;
}
