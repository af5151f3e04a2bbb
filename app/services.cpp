#include "app/services.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "common/database_url.hpp"

namespace iop::app {

namespace {

constexpr std::chrono::milliseconds max_lock_wait{10'000};

}  // namespace

Services::Services(Config c) : config(std::move(c)) {}

Services::~Services() {
  // Finish blocking work before the objects it uses go away. HTTP calls first: a refresh ends
  // with a hop to the blocking pool.
  http.join();
  blocking.join();
}

auth::OAuthClientSettings oauth_client_settings(const Config& config) {
  auth::OAuthClientSettings s;
  s.token_endpoint = config.oauth.token_endpoint;
  s.client_id = config.oauth.client_id;
  s.client_secret = config.oauth.client_secret;
  s.scope = config.oauth.scope;
  s.http.timeout = config.oauth.http_timeout;
  s.http.ca_file = config.oauth.ca_file.string();
  // A refresh must end before other instances stop waiting for its Redis lock.
  s.backoff.max_total = std::max(config.redis.lock_timeout * 5 / 6, config.oauth.http_timeout);
  return s;
}

auth::OAuthClientSettings oauth_client_settings(const Config& config,
                                                const auth::ResolvedProvider& provider) {
  auto s = oauth_client_settings(config);
  s.token_endpoint = provider.token_endpoint;
  s.client_id = provider.client_id;
  s.client_secret = provider.client_secret;
  s.scope = provider.scope;
  return s;
}

Result<auth::ResolvedProvider> account_provider(const Config& config,
                                                const storage::Credentials& row) {
  auto profile = config.provider(row.provider.empty() ? auth::default_provider : row.provider);
  if (!profile) {
    return std::unexpected(Error{
        Errc::config_error, fmt::format("account {}: {}", row.email, profile.error().message)});
  }
  return auth::resolve_provider(**profile, row.tenant, row.client_id);
}

Result<auth::AccountClient> account_client(const Config& config, const storage::Credentials& row) {
  IOP_TRY_ASSIGN(auto provider, account_provider(config, row));
  auth::AccountClient out{oauth_client_settings(config, provider),
                          provider.flow == auth::Flow::app};
  if (!row.client_certificate.empty()) {
    out.client.client_certificate = row.client_certificate;
    out.client.client_secret = Secret();
  } else if (!row.client_secret.empty()) {
    out.client.client_secret = row.client_secret;
  }
  return out;
}

void record_event(Services& services, storage::AuditEvent event, const std::string& email,
                  std::string detail) {
  if (services.audit_writer == nullptr) {
    return;
  }
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  services.audit_writer->enqueue(storage::event_record(event, email, std::move(detail), now_ms));
}

Result<std::unique_ptr<Services>> make_services(Config config, KeyPolicy key_policy) {
  namespace fs = std::filesystem;
  const auto key_path = config.storage.key_file;
  const auto db_path = config.storage.database;
  const auto log_path = config.storage.connection_log;
  const bool postgres = config.storage.postgres();
  Result<storage::MasterKey> key = fail(Errc::key_error, "no key");
  // With PostgreSQL the database may be older than this machine's files: a new key is only ever
  // a key the database refuses (its key check), never a silent second key.
  bool created_key = false;
  if (key_policy == KeyPolicy::create_if_new && !fs::exists(key_path) &&
      (postgres || !fs::exists(db_path))) {
    key = storage::MasterKey::create(key_path);
    created_key = key.has_value();
  } else if (!fs::exists(key_path) && (postgres || fs::exists(db_path))) {
    // MasterKey::load's advice ('init') is for a machine with nothing yet; here the secrets
    // already stored were sealed with a key that is gone, and `init` refuses to make another.
    if (postgres) {
      return fail(Errc::key_error,
                  fmt::format("master key file {} does not exist: copy it from another instance "
                              "using this PostgreSQL database, or restore it from a backup (a new "
                              "key cannot read the stored tokens); for a database never used yet, "
                              "run 'imap-oauth2-proxy init'",
                              key_path.string()));
    }
    return fail(Errc::key_error,
                fmt::format("master key file {} does not exist, but the database {} does: "
                            "restore the key file the database was created with (a new key "
                            "cannot read the stored tokens)",
                            key_path.string(), db_path.string()));
  } else {
    key = storage::MasterKey::load(key_path);
  }
  IOP_TRY(key);
  IOP_TRY_ASSIGN(const Secret db_password, database_password(config));
  if (!is_postgres_url(log_path.native())) {
    std::error_code ec;
    fs::create_directories(log_path.parent_path(), ec);
  }

  auto services = std::make_unique<Services>(std::move(config));
  const auto& cfg = services->config;
  auto store = storage::CredentialsStore::open(db_path.native(), db_password, *key);
  if (!store && created_key && store.error().code == Errc::key_error) {
    // The database answered that it belongs to another key (an instance joining a cluster
    // without the cluster's key file): the key just made was never used; leave no file that a
    // later start would load instead of the right one. Only on that answer: after any other
    // error the database may have recorded this key.
    std::error_code ec;
    fs::remove(key_path, ec);
  }
  IOP_TRY(store);
  services->store = std::move(*store);
  // After the store: its key check decides whether a log from before keying may be keyed now.
  IOP_TRY_ASSIGN(services->audit, storage::AuditLog::open(log_path.native(), db_password, *key));
  storage::AuditWriterSettings aws;
  aws.max_queued_rows = static_cast<std::size_t>(cfg.audit.max_queued_rows);
  // Rows wait up to this long to share a commit: under a steady stream of logins a commit per
  // row would be the writer's main cost and compete with sessions for the CPU. A crash loses
  // the queue either way; shutdown flushes it.
  aws.linger = std::chrono::milliseconds(250);
  services->audit_writer =
      std::make_unique<storage::AuditWriter>(storage::audit_log_sink(*services->audit), aws);
  if (!cfg.redis.url.empty()) {
    IOP_TRY_ASSIGN(
        services->cache,
        storage::TokenCache::create(
            storage::RedisSettings{cfg.redis.url, cfg.redis.key_prefix, cfg.redis.timeout}, *key));
  }
  services->endpoint = std::make_unique<auth::TokenEndpoint>(oauth_client_settings(cfg),
                                                             services->http.get_executor());
  auth::TokenServiceSettings ts;
  ts.freshness.refresh_margin =
      std::chrono::duration_cast<std::chrono::seconds>(cfg.oauth.refresh_margin);
  ts.freshness.session_min_lifetime =
      std::chrono::duration_cast<std::chrono::seconds>(cfg.oauth.session_min_lifetime);
  ts.lock_ttl = cfg.redis.lock_timeout;
  // A login waits at most this long for another instance's refresh (or for a lock key nobody
  // will release): well inside a mail client's patience, whatever lock_timeout says.
  ts.lock_wait = std::min(cfg.redis.lock_timeout, max_lock_wait);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  ts.instance_id = fmt::format("{}:{}", host, ::getpid());
  // The resolver reads the configuration the services own; it lives as long as they do.
  ts.resolve_client = [&cfg](const storage::Credentials& row) { return account_client(cfg, row); };
  // Token events go to the connection log off the refreshing coroutine (the call must not block).
  ts.on_event = [s = services.get()](storage::AuditEvent event, const std::string& email,
                                     std::string detail) {
    record_event(*s, event, email, std::move(detail));
  };
  services->tokens = std::make_unique<auth::TokenService>(*services->store, services->cache.get(),
                                                          *services->endpoint,
                                                          services->blocking.get_executor(), ts);
  return services;
}

}  // namespace iop::app
