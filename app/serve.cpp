#include "app/serve.hpp"

#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <thread>

#include "auth/local_auth.hpp"
#include "auth/refresher.hpp"
#include "certs/local_cert.hpp"
#include "certs/tls_context.hpp"
#include "common/blocking.hpp"
#include "proxy/listener.hpp"
#include "proxy/prewarm.hpp"
#include "proxy/session.hpp"
#include "proxy/smtp_session.hpp"
#include "proxy/spare_pool.hpp"
#include "storage/audit_log.hpp"
#include "storage/audit_writer.hpp"

namespace iop::app {

namespace {

// The daily retention's wait, and whether shutdown has stopped it. Both are touched only on the
// main io_context's one thread (the signal handler runs there too).
struct Retention {
  explicit Retention(net::io_context& ioc) : timer(ioc) {}
  net::steady_timer timer;
  bool stopped = false;
  void stop() {
    stopped = true;
    timer.cancel();  // a wait in progress ends now; `stopped` covers a prune in progress
  }
};

// Deletes connection-log rows older than [audit] keep_days now and then every 24 hours, until
// shutdown stops it. A stop that lands while a prune runs on the pool finds no wait to cancel:
// `stopped` is checked before each wait, or the 24-hour wait would hold serve's exit.
awaitable<void> prune_daily(Services& services, Retention& retention) {
  const std::int64_t keep_ms = std::int64_t{services.config.audit.keep_days} * 86'400'000;
  for (;;) {
    const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
    auto job = [&services, keep_ms, now_ms] {
      return services.audit->prune(now_ms - keep_ms, now_ms);
    };
    const auto pruned = co_await run_on_pool(services.blocking.get_executor(), std::move(job));
    if (!pruned) {
      spdlog::error("connection log retention: {}", pruned.error());
    } else if (pruned->deleted > 0) {
      spdlog::info("connection log retention: deleted {} row(s) older than {} day(s)",
                   pruned->deleted, services.config.audit.keep_days);
    }
    if (retention.stopped) {
      co_return;
    }
    retention.timer.expires_after(std::chrono::hours(24));
    boost::system::error_code ec;
    co_await retention.timer.async_wait(net::redirect_error(net::use_awaitable, ec));
    if (ec || retention.stopped) {
      co_return;
    }
  }
}

proxy::SmtpEndpoint smtp_endpoint(const std::string& host, int port, std::string_view tls) {
  const proxy::SmtpTls mode = tls.empty()         ? proxy::default_smtp_tls(port)
                              : tls == "implicit" ? proxy::SmtpTls::implicit
                                                  : proxy::SmtpTls::starttls;
  return {host, port, mode};
}

}  // namespace

proxy::ProxySettings proxy_settings(const Config& cfg) {
  proxy::ProxySettings s;
  s.preauth_timeout = cfg.server.preauth_timeout;
  s.idle_timeout = cfg.server.idle_timeout;
  s.allow_plaintext_loopback = cfg.server.allow_plaintext_loopback;
  s.max_connections = cfg.server.max_connections;
  s.shutdown_grace = cfg.server.shutdown_grace;
  s.default_upstream = {cfg.upstream.host, cfg.upstream.port};
  s.upstream.timeout = cfg.upstream.timeout;
  s.upstream.probe = cfg.upstream.probe;
  s.hide_capabilities = cfg.hide_capabilities;
  s.hostname = cfg.server.hostname;
  for (const auto& [name, profile] : cfg.providers) {
    s.provider_upstreams[name] = {profile.upstream_host, profile.upstream_port};
    if (!profile.smtp_host.empty()) {
      s.provider_smtp[name] = smtp_endpoint(profile.smtp_host, profile.smtp_port, profile.smtp_tls);
    }
  }
  s.default_smtp =
      smtp_endpoint(cfg.upstream.smtp_host, cfg.upstream.smtp_port, cfg.upstream.smtp_tls);
  return s;
}

namespace {

// Descriptors kept aside from sessions: listeners, the database (with its WAL and shm), Redis,
// token-endpoint connections, the log, the event loops' epoll/eventfd/timerfd.
constexpr std::uint64_t reserved_descriptors = 64;

// Raises the soft RLIMIT_NOFILE to the hard limit (a session needs two descriptors; the soft
// default of 1024 caps a proxy at a few hundred sessions). Returns the soft limit in effect.
std::uint64_t raise_open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return 1024;
  }
  if (limit.rlim_cur != limit.rlim_max) {
    rlimit raised = limit;
    // An unlimited hard limit cannot become the soft one (the kernel caps it at nr_open).
    raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? 1 << 20 : limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      limit = raised;
    }
  }
  return limit.rlim_cur == RLIM_INFINITY ? 1 << 20 : limit.rlim_cur;
}

// The max_connections the descriptors allow: two per session (client, upstream) after the
// reserve; with a very low limit, half of it is kept in reserve instead. At least 1.
int derived_max_connections(std::uint64_t open_files) {
  const std::uint64_t reserve = std::min(reserved_descriptors, open_files / 2);
  const std::uint64_t sessions = (open_files - reserve) / 2;
  return static_cast<int>(std::clamp<std::uint64_t>(sessions, 1, 1'000'000));
}

template <class T>
T must(Result<T> r, std::string_view what) {
  if (!r) {
    throw std::runtime_error(fmt::format("{}: {}", what, r.error().message));
  }
  return std::move(*r);
}

// How long shutdown keeps retrying token writes the database refused.
constexpr std::chrono::milliseconds token_flush_window{10'000};

// A refresh whose database write failed left the rotated refresh token in memory (and Redis)
// only; exiting silently would lose it, and with an endpoint that revokes on use the account
// with it (issue #7, item 7). Retry for a bounded time, then name every account left.
void flush_token_writes(Services& services) {
  const auto lost = auth::run_blocking<std::vector<std::string>>(
      [&services] { return services.tokens->flush_pending_writes(token_flush_window); });
  if (!lost.empty()) {
    spdlog::error("serve: {} account(s) whose newest refresh token is NOT in the database: {}",
                  lost.size(), fmt::join(lost, ", "));
  }
}

// How long shutdown waits for the connection-log rows still queued.
constexpr std::chrono::milliseconds audit_flush_window{10'000};

// Every session has ended: write the rows they queued (the writer logs any it cannot write).
void flush_connection_log(storage::AuditWriter* audit) {
  if (audit == nullptr) {
    return;
  }
  const auto left = audit->flush(audit_flush_window);
  const auto stats = audit->stats();
  spdlog::info("serve: connection log: {} row(s) written, {} unwritten, {} dropped", stats.written,
               left, stats.dropped);
}

}  // namespace

int serve(Services& services) {
  const auto& cfg = services.config;
  // A peer that goes away mid-write must be an error on that connection, never the end of the
  // process (libraries such as hiredis write with plain write(2)).
  std::signal(SIGPIPE, SIG_IGN);
  try {
    const bool created =
        must(certs::ensure_server_certificate(cfg.server.certificate, cfg.server.private_key),
             "server certificate");
    if (created) {
      spdlog::info(
          "generated a local TLS certificate for localhost, 127.0.0.1 and ::1: {} (key {}); "
          "clients that verify certificates should trust {}",
          cfg.server.certificate.string(), cfg.server.private_key.string(),
          certs::ca_certificate_path(cfg.server.certificate).string());
    }
    auto server_tls =
        must(certs::make_server_context(cfg.server.certificate, cfg.server.private_key),
             "TLS server context");
    auto upstream_tls = must(certs::make_client_context(cfg.upstream.ca_file), "upstream TLS");

    auth::LocalAuthSettings las;
    las.cache_ttl = cfg.server.login_cache_ttl;
    las.failure_delay = cfg.server.auth_failure_delay;
    auth::LocalAuthenticator local_auth(*services.store, services.blocking.get_executor(), las);
    auto settings = proxy_settings(cfg);
    const auto open_files = raise_open_file_limit();
    if (settings.max_connections <= 0) {
      settings.max_connections = derived_max_connections(open_files);
      spdlog::info(
          "max_connections {} (derived from the open-file limit {}; set [server] "
          "max_connections to choose)",
          settings.max_connections, open_files);
    } else if (static_cast<std::uint64_t>(settings.max_connections) >
               (open_files > reserved_descriptors ? (open_files - reserved_descriptors) / 2 : 0)) {
      spdlog::warn(
          "[server] max_connections = {} needs about {} open files, but the limit is {}: "
          "accepts will pause when descriptors run out (raise LimitNOFILE / ulimit -n)",
          settings.max_connections,
          2 * static_cast<std::uint64_t>(settings.max_connections) + reserved_descriptors,
          open_files);
    }
    proxy::SessionRegistry registry;
    proxy::SmtpExtensionCache smtp_extensions;
    // [audit] connection_log = false: no connection rows (token and account events still are).
    storage::AuditWriter* connection_rows =
        cfg.audit.connection_log ? services.audit_writer.get() : nullptr;
    if (connection_rows == nullptr) {
      spdlog::info("[audit] connection_log = false: no connection-log rows are written");
    }
    // [upstream] preconnect: a spare connection per upstream server for the next login.
    std::shared_ptr<proxy::SparePool> spare_pool;
    if (cfg.upstream.preconnect) {
      spare_pool =
          proxy::SparePool::create(*upstream_tls, proxy::SparePolicy{}, settings.upstream.timeout);
      settings.upstream.spares = spare_pool.get();
    }
    // [upstream] prewarm and max_connections_per_account: with neither, no pool and logins
    // work exactly as before.
    std::shared_ptr<proxy::UpstreamPool> upstream_pool;
    if (cfg.upstream.prewarm || cfg.upstream.max_connections_per_account > 0) {
      proxy::UpstreamPoolSettings pool_settings;
      pool_settings.policy.enabled = cfg.upstream.prewarm;
      pool_settings.policy.window = cfg.upstream.prewarm_window;
      // A warm connection must leave the client as much token life as a fresh login would.
      pool_settings.policy.min_token_life = cfg.oauth.session_min_lifetime;
      pool_settings.policy.max_per_account = cfg.upstream.max_connections_per_account;
      pool_settings.upstream = settings.upstream;
      // Warm-ups open their own connections: a spare is for a client's login, and a warm-up
      // taking it (or counting as a login) would keep spares coming while no client logs in.
      pool_settings.upstream.spares = nullptr;
      upstream_pool = proxy::UpstreamPool::create(*services.tokens, *upstream_tls, pool_settings);
      spdlog::info(
          "upstream pool: prewarm {} (window {} s), max_connections_per_account {}",
          cfg.upstream.prewarm ? "on" : "off",
          std::chrono::duration_cast<std::chrono::seconds>(cfg.upstream.prewarm_window).count(),
          cfg.upstream.max_connections_per_account);
    }
    proxy::SessionDeps deps{*services.tokens, local_auth,       *server_tls,
                            *upstream_tls,    settings,         connection_rows,
                            registry,         &smtp_extensions, upstream_pool.get()};

    // The main context runs the listeners, signals and the refresher; each worker context runs
    // on one thread and owns the sessions it was given.
    net::io_context ioc;
    const unsigned threads = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    std::vector<std::unique_ptr<net::io_context>> workers;
    std::vector<net::executor_work_guard<net::io_context::executor_type>> keep_running;
    for (unsigned i = 0; i < threads; ++i) {
      workers.push_back(std::make_unique<net::io_context>(1));
      keep_running.push_back(net::make_work_guard(*workers.back()));
    }
    std::atomic<unsigned> next_worker{0};
    const proxy::ExecutorPicker pick = [&workers, &next_worker]() -> net::any_io_executor {
      return workers[next_worker++ % workers.size()]->get_executor();
    };
    // Before the listeners bind: a SIGTERM sent as soon as the port accepts (a supervisor, a
    // test) must reach the drain below, not the default action (it was exit status 143).
    net::signal_set signals(ioc, SIGINT, SIGTERM);
    std::vector<std::unique_ptr<proxy::Listener>> listeners;
    if (cfg.server.listen_tls) {
      listeners.push_back(must(proxy::Listener::bind(ioc, cfg.server.listen_tls->host,
                                                     cfg.server.listen_tls->port, true, deps, pick),
                               "[server] listen_tls"));
    }
    if (cfg.server.listen_starttls) {
      listeners.push_back(
          must(proxy::Listener::bind(ioc, cfg.server.listen_starttls->host,
                                     cfg.server.listen_starttls->port, false, deps, pick),
               "[server] listen_starttls"));
    }
    if (cfg.server.listen_submission) {
      listeners.push_back(
          must(proxy::Listener::bind(ioc, cfg.server.listen_submission->host,
                                     cfg.server.listen_submission->port, false, deps, pick,
                                     proxy::ListenerProtocol::submission),
               "[server] listen_submission"));
    }
    if (cfg.server.listen_submissions) {
      listeners.push_back(
          must(proxy::Listener::bind(ioc, cfg.server.listen_submissions->host,
                                     cfg.server.listen_submissions->port, true, deps, pick,
                                     proxy::ListenerProtocol::submission),
               "[server] listen_submissions"));
    }

    auth::RefresherSettings rs;
    rs.tick = cfg.oauth.background_refresh;
    rs.keepalive = std::chrono::duration_cast<std::chrono::seconds>(cfg.oauth.keepalive);
    auth::Refresher refresher(*services.tokens, rs);

    auto log_done = [](std::string what) {
      return [what](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            spdlog::error("{} failed: {}", what, ex.what());
          }
        }
      };
    };
    for (auto& l : listeners) {
      net::co_spawn(ioc, l->run(), log_done("listener " + l->name()));
    }
    net::co_spawn(ioc, refresher.run(), log_done("background refresher"));

    // Retention ([audit] keep_days): at start, then daily, on the blocking pool.
    Retention retention(ioc);
    if (cfg.audit.keep_days > 0) {
      net::co_spawn(ioc, prune_daily(services, retention), log_done("audit retention"));
    }

    // SIGINT/SIGTERM: stop accepting, give sessions the grace period, then close them. A second
    // signal closes them at once. The io_context runs out of work when everything has ended.
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) {
        return;
      }
      spdlog::info("signal {}: draining {} session(s) for up to {} ms", sig,
                   proxy::Listener::active_sessions(), settings.shutdown_grace.count());
      for (auto& l : listeners) {
        l->stop();
      }
      refresher.stop();
      retention.stop();
      if (upstream_pool) {
        upstream_pool->stop();  // warm connections logged out and closed on their workers
      }
      if (spare_pool) {
        spare_pool->stop();  // spare connections closed on their workers
      }
      signals.async_wait([&](const boost::system::error_code& e2, int) {
        if (!e2) {
          registry.close_all();
        }
      });
      net::co_spawn(
          ioc,
          [&]() -> awaitable<void> {
            const auto deadline = std::chrono::steady_clock::now() + settings.shutdown_grace;
            bool closed = false;
            net::steady_timer tick(ioc);
            while (proxy::Listener::active_sessions() > 0) {
              if (!closed && std::chrono::steady_clock::now() >= deadline) {
                spdlog::info("grace period over: closing {} session(s)",
                             proxy::Listener::active_sessions());
                registry.close_all();
                closed = true;
              }
              tick.expires_after(std::chrono::milliseconds(50));
              co_await tick.async_wait(net::use_awaitable);
            }
            signals.cancel();
            for (auto& guard : keep_running) {
              guard.reset();
            }
          },
          log_done("drain"));
    });

    const auto accounts = services.store->list();
    spdlog::info("serve: {} account(s), upstream {}:{}, Redis {}, background refresh every {}s",
                 accounts ? accounts->size() : 0, cfg.upstream.host, cfg.upstream.port,
                 cfg.redis.url.empty() ? "off (database only)" : "on",
                 std::chrono::duration_cast<std::chrono::seconds>(rs.tick).count());

    std::vector<std::thread> pool;
    for (auto& worker : workers) {
      pool.emplace_back([&worker] { worker->run(); });
    }
    ioc.run();
    if (upstream_pool) {
      upstream_pool->stop();  // idempotent: nothing may start a warm-up on a stopping worker
    }
    if (spare_pool) {
      spare_pool->stop();  // idempotent, likewise for spares
    }
    for (auto& guard : keep_running) {
      guard.reset();  // sessions still running finish; then the workers return
    }
    for (auto& t : pool) {
      t.join();
    }
    flush_token_writes(services);
    flush_connection_log(services.audit_writer.get());
    spdlog::info("serve: stopped");
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("serve: {}", e.what());
    std::fprintf(stderr, "imap-oauth2-proxy: %s\n", e.what());
    return 1;
  }
}

}  // namespace iop::app
