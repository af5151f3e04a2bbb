#include "app/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "auth/http_client.hpp"
#include "common/ascii.hpp"
#include "common/database_url.hpp"
#include "common/duration.hpp"
#include "common/host_port.hpp"

namespace iop::app {
namespace fs = std::filesystem;

namespace {

using Setter = std::function<Result<void>(const toml::node&)>;

std::string describe(const toml::node& node) {
  if (auto s = node.as_string()) {
    return fmt::format("\"{}\"", s->get());
  }
  return node.visit([](const auto& value) -> std::string {
    std::ostringstream out;
    out << value;
    return out.str();
  });
}

struct Section {
  std::string_view name;
  std::map<std::string, Setter, std::less<>> keys;
};

std::unexpected<Error> bad(std::string_view section, std::string_view key, std::string_view why) {
  return fail(Errc::config_error, fmt::format("[{}] {}: {}", section, key, why));
}

Setter string_into(std::string_view section, std::string_view key, std::string& out) {
  return [section, key, &out](const toml::node& node) -> Result<void> {
    const auto* s = node.as_string();
    if (s == nullptr) {
      return bad(section, key, fmt::format("expected a string, got {}", describe(node)));
    }
    out = s->get();
    return {};
  };
}

Setter path_into(std::string_view section, std::string_view key, fs::path& out,
                 const fs::path& base) {
  return [section, key, &out, base](const toml::node& node) -> Result<void> {
    const auto* s = node.as_string();
    if (s == nullptr) {
      return bad(section, key, fmt::format("expected a path string, got {}", describe(node)));
    }
    out = s->get().empty() ? fs::path{} : (base / s->get()).lexically_normal();
    return {};
  };
}

// A path, or a PostgreSQL URL kept as written.
Setter database_into(std::string_view section, std::string_view key, fs::path& out,
                     const fs::path& base) {
  return [section, key, &out, base](const toml::node& node) -> Result<void> {
    const auto* s = node.as_string();
    if (s != nullptr && is_postgres_url(s->get())) {
      out = fs::path(s->get());
      return {};
    }
    return path_into(section, key, out, base)(node);
  };
}

Setter duration_into(std::string_view section, std::string_view key,
                     std::chrono::milliseconds& out) {
  return [section, key, &out](const toml::node& node) -> Result<void> {
    const auto* s = node.as_string();
    const auto parsed = s != nullptr ? parse_duration(s->get()) : std::nullopt;
    if (!parsed) {
      return bad(section, key,
                 fmt::format("expected a duration like \"250ms\", got {}", describe(node)));
    }
    out = *parsed;
    return {};
  };
}

Setter bool_into(std::string_view section, std::string_view key, bool& out) {
  return [section, key, &out](const toml::node& node) -> Result<void> {
    const auto* b = node.as_boolean();
    if (b == nullptr) {
      return bad(section, key, fmt::format("expected true or false, got {}", describe(node)));
    }
    out = b->get();
    return {};
  };
}

// true, false or "auto".
Setter probe_into(std::string_view section, std::string_view key, proxy::Probe& out) {
  return [section, key, &out](const toml::node& node) -> Result<void> {
    if (const auto* b = node.as_boolean()) {
      out = b->get() ? proxy::Probe::always : proxy::Probe::never;
      return {};
    }
    const auto* s = node.as_string();
    if (s != nullptr && s->get() == "auto") {
      out = proxy::Probe::exchange;
      return {};
    }
    return bad(section, key,
               fmt::format("expected true, false or \"auto\", got {}", describe(node)));
  };
}

Setter int_into(std::string_view section, std::string_view key, int& out, int min, int max) {
  return [section, key, &out, min, max](const toml::node& node) -> Result<void> {
    const auto* i = node.as_integer();
    if (i == nullptr || i->get() < min || i->get() > max) {
      return bad(
          section, key,
          fmt::format("expected an integer from {} to {}, got {}", min, max, describe(node)));
    }
    out = static_cast<int>(i->get());
    return {};
  };
}

Setter listen_into(std::string_view section, std::string_view key, std::optional<HostPort>& out) {
  return [section, key, &out](const toml::node& node) -> Result<void> {
    const auto* s = node.as_string();
    if (s == nullptr) {
      return bad(section, key, fmt::format("expected \"host:port\", got {}", describe(node)));
    }
    if (s->get().empty()) {  // listening on that kind of port is off
      out.reset();
      return {};
    }
    auto parsed = parse_host_port(s->get());
    if (!parsed) {
      return bad(section, key, fmt::format("{}, got {}", parsed.error().message, describe(node)));
    }
    out = std::move(*parsed);
    return {};
  };
}

Setter endpoint_into(std::string_view section, std::string_view key, std::string& out) {
  return [section, key, &out](const toml::node& node) -> Result<void> {
    const auto* s = node.as_string();
    if (s == nullptr || !auth::acceptable_endpoint_url(s->get())) {
      return bad(section, key,
                 fmt::format("expected an https:// URL (http:// only for loopback hosts), got {}",
                             describe(node)));
    }
    out = s->get();
    return {};
  };
}

// Like endpoint_into, but "" is allowed: a profile without that flow.
Setter optional_endpoint_into(std::string_view section, std::string_view key, std::string& out) {
  auto required = endpoint_into(section, key, out);
  return [required, &out](const toml::node& node) -> Result<void> {
    if (const auto* s = node.as_string(); s != nullptr && s->get().empty()) {
      out.clear();
      return {};
    }
    return required(node);
  };
}

// smtp_tls: "" (by port), "starttls" or "implicit".
bool valid_smtp_tls(std::string_view value) {
  return value.empty() || value == "starttls" || value == "implicit";
}

// Applies one [providers.NAME] table to `profile`.
Result<void> apply_provider_table(const toml::table& table, auth::ProviderProfile& profile,
                                  const std::string& section) {
  std::string flow(auth::to_string(profile.flow));
  std::string secret = profile.client_secret.reveal();
  const std::string_view s = section;
  const std::map<std::string, Setter, std::less<>> keys = {
      {"token_endpoint", endpoint_into(s, "token_endpoint", profile.token_endpoint)},
      {"authorize_endpoint",
       optional_endpoint_into(s, "authorize_endpoint", profile.authorize_endpoint)},
      {"device_endpoint", optional_endpoint_into(s, "device_endpoint", profile.device_endpoint)},
      {"client_id", string_into(s, "client_id", profile.client_id)},
      {"client_secret", string_into(s, "client_secret", secret)},
      {"scope", string_into(s, "scope", profile.scope)},
      {"send_scope", string_into(s, "send_scope", profile.send_scope)},
      {"flow", string_into(s, "flow", flow)},
      {"tenant", string_into(s, "tenant", profile.tenant)},
      {"upstream_host", string_into(s, "upstream_host", profile.upstream_host)},
      {"upstream_port", int_into(s, "upstream_port", profile.upstream_port, 1, 65535)},
      {"smtp_host", string_into(s, "smtp_host", profile.smtp_host)},
      {"smtp_port", int_into(s, "smtp_port", profile.smtp_port, 1, 65535)},
      {"smtp_tls", string_into(s, "smtp_tls", profile.smtp_tls)},
  };
  for (const auto& [key, value] : table) {
    auto setter = keys.find(key.str());
    if (setter == keys.end()) {
      return bad(s, key.str(), "unknown key");
    }
    IOP_TRY(setter->second(value));
  }
  profile.client_secret = Secret(std::move(secret));
  const auto parsed_flow = auth::parse_flow(flow);
  if (!parsed_flow) {
    return bad(s, "flow", fmt::format("expected \"delegated\" or \"app\", got \"{}\"", flow));
  }
  profile.flow = *parsed_flow;
  return {};
}

// Checks what resolve_provider() cannot: keys that make a profile useless whatever the account.
Result<void> validate_profile(const auth::ProviderProfile& p, std::string_view section) {
  if (!p.tenant.empty() && !auth::valid_tenant(p.tenant)) {
    return bad(section, "tenant",
               fmt::format("\"{}\" is not a tenant id, a domain, common, organizations or "
                           "consumers",
                           p.tenant));
  }
  if (p.upstream_host.empty()) {
    return bad(section, "upstream_host", "must not be empty");
  }
  if (!valid_smtp_tls(p.smtp_tls)) {
    return bad(section, "smtp_tls",
               fmt::format("expected \"starttls\" or \"implicit\", got \"{}\"", p.smtp_tls));
  }
  // Microsoft issues a refresh token only for offline_access; Google has its own parameter
  // (access_type=offline), which the google profile sends.
  const bool google = p.token_endpoint.find("googleapis.com") != std::string::npos;
  if (p.flow == auth::Flow::delegated && !google &&
      p.scope.find("offline_access") == std::string::npos) {
    return bad(section, "scope", "must include offline_access, or no refresh token is issued");
  }
  return {};
}

}  // namespace

Result<const auth::ProviderProfile*> Config::provider(std::string_view name) const {
  auto it = providers.find(name);
  if (it == providers.end()) {
    std::string known;
    for (const auto& [n, p] : providers) {
      known += known.empty() ? n : ", " + n;
    }
    return fail(Errc::config_error,
                fmt::format("no provider '{}' (known: {}); define it as [providers.{}] in {}", name,
                            known, name, file.empty() ? "the config file" : file.string()));
  }
  return &it->second;
}

bool StorageConfig::postgres() const { return is_postgres_url(database.native()); }

Config default_config(const fs::path& base_dir) {
  Config c;
  c.base_dir = base_dir;
  c.server.certificate = base_dir / "certs/server.crt";
  c.server.private_key = base_dir / "certs/server.key";
  c.storage.database = base_dir / "data/credentials.db";
  c.storage.key_file = base_dir / "data/master.key";
  c.storage.connection_log = c.storage.database;
  return c;
}

Result<Config> parse_config(std::string_view toml_text, const fs::path& base_dir,
                            std::string_view source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return fail(Errc::config_error, fmt::format("{}:{}:{}: {}", source_name, where.line,
                                                where.column, e.description()));
  }

  Config c = default_config(base_dir);
  c.storage.connection_log.clear();  // follows [storage] database unless set: see below
  std::string log_format = "text";
  std::string client_secret;
  const std::string_view s = "server", u = "upstream", o = "oauth", st = "storage", r = "redis",
                         l = "log", a = "audit";
  std::vector<Section> sections;
  sections.push_back(
      {s,
       {{"listen_tls", listen_into(s, "listen_tls", c.server.listen_tls)},
        {"listen_starttls", listen_into(s, "listen_starttls", c.server.listen_starttls)},
        {"listen_submission", listen_into(s, "listen_submission", c.server.listen_submission)},
        {"listen_submissions", listen_into(s, "listen_submissions", c.server.listen_submissions)},
        {"hostname", string_into(s, "hostname", c.server.hostname)},
        {"certificate", path_into(s, "certificate", c.server.certificate, base_dir)},
        {"private_key", path_into(s, "private_key", c.server.private_key, base_dir)},
        {"max_connections", int_into(s, "max_connections", c.server.max_connections, 0, 1'000'000)},
        {"preauth_timeout", duration_into(s, "preauth_timeout", c.server.preauth_timeout)},
        {"idle_timeout", duration_into(s, "idle_timeout", c.server.idle_timeout)},
        {"shutdown_grace", duration_into(s, "shutdown_grace", c.server.shutdown_grace)},
        {"allow_plaintext_loopback",
         bool_into(s, "allow_plaintext_loopback", c.server.allow_plaintext_loopback)},
        {"login_cache_ttl", duration_into(s, "login_cache_ttl", c.server.login_cache_ttl)},
        {"auth_failure_delay",
         duration_into(s, "auth_failure_delay", c.server.auth_failure_delay)}}});
  sections.push_back(
      {u,
       {{"host", string_into(u, "host", c.upstream.host)},
        {"port", int_into(u, "port", c.upstream.port, 1, 65535)},
        {"ca_file", path_into(u, "ca_file", c.upstream.ca_file, base_dir)},
        {"timeout", duration_into(u, "timeout", c.upstream.timeout)},
        {"probe", probe_into(u, "probe", c.upstream.probe)},
        {"preconnect", bool_into(u, "preconnect", c.upstream.preconnect)},
        {"prewarm", bool_into(u, "prewarm", c.upstream.prewarm)},
        {"prewarm_window", duration_into(u, "prewarm_window", c.upstream.prewarm_window)},
        {"max_connections_per_account",
         int_into(u, "max_connections_per_account", c.upstream.max_connections_per_account, 0,
                  1'000'000)},
        {"smtp_host", string_into(u, "smtp_host", c.upstream.smtp_host)},
        {"smtp_port", int_into(u, "smtp_port", c.upstream.smtp_port, 1, 65535)},
        {"smtp_tls", string_into(u, "smtp_tls", c.upstream.smtp_tls)}}});
  sections.push_back(
      {o,
       {{"token_endpoint", endpoint_into(o, "token_endpoint", c.oauth.token_endpoint)},
        {"device_endpoint", endpoint_into(o, "device_endpoint", c.oauth.device_endpoint)},
        {"authorize_endpoint", endpoint_into(o, "authorize_endpoint", c.oauth.authorize_endpoint)},
        {"client_id", string_into(o, "client_id", c.oauth.client_id)},
        {"client_secret", string_into(o, "client_secret", client_secret)},
        {"scope", string_into(o, "scope", c.oauth.scope)},
        {"send_scope", string_into(o, "send_scope", c.oauth.send_scope)},
        {"refresh_margin", duration_into(o, "refresh_margin", c.oauth.refresh_margin)},
        {"session_min_lifetime",
         duration_into(o, "session_min_lifetime", c.oauth.session_min_lifetime)},
        {"keepalive", duration_into(o, "keepalive", c.oauth.keepalive)},
        {"background_refresh", duration_into(o, "background_refresh", c.oauth.background_refresh)},
        {"http_timeout", duration_into(o, "http_timeout", c.oauth.http_timeout)},
        {"ca_file", path_into(o, "ca_file", c.oauth.ca_file, base_dir)}}});
  sections.push_back(
      {st,
       {{"database", database_into(st, "database", c.storage.database, base_dir)},
        {"key_file", path_into(st, "key_file", c.storage.key_file, base_dir)},
        {"password_file", path_into(st, "password_file", c.storage.password_file, base_dir)},
        {"connection_log",
         database_into(st, "connection_log", c.storage.connection_log, base_dir)}}});
  sections.push_back({r,
                      {{"url", string_into(r, "url", c.redis.url)},
                       {"key_prefix", string_into(r, "key_prefix", c.redis.key_prefix)},
                       {"timeout", duration_into(r, "timeout", c.redis.timeout)},
                       {"lock_timeout", duration_into(r, "lock_timeout", c.redis.lock_timeout)}}});
  sections.push_back(
      {a,
       {{"connection_log", bool_into(a, "connection_log", c.audit.connection_log)},
        {"max_queued_rows", int_into(a, "max_queued_rows", c.audit.max_queued_rows, 1, 10'000'000)},
        {"keep_days", int_into(a, "keep_days", c.audit.keep_days, 0, 36500)}}});
  sections.push_back({l,
                      {{"level", string_into(l, "level", c.log.level)},
                       {"format", string_into(l, "format", log_format)}}});

  const toml::table* provider_tables = nullptr;
  for (const auto& [name, node] : root) {
    if (name.str() == "providers") {
      provider_tables = node.as_table();
      if (provider_tables == nullptr) {
        return fail(Errc::config_error, "providers: expected [providers.NAME] tables");
      }
      continue;
    }
    if (name.str() == "hide_capabilities") {
      const auto* table = node.as_table();
      if (table == nullptr) {
        return fail(Errc::config_error, "hide_capabilities: expected a [hide_capabilities] table");
      }
      for (const auto& [account, value] : *table) {
        const auto* list = value.as_array();
        std::vector<std::string> caps;
        if (list != nullptr) {
          for (const auto& item : *list) {
            if (const auto* cap = item.as_string()) {
              caps.push_back(cap->get());
            } else {
              list = nullptr;
              break;
            }
          }
        }
        if (list == nullptr) {
          return bad("hide_capabilities", account.str(),
                     fmt::format("expected a list of capability names, got {}", describe(value)));
        }
        c.hide_capabilities[ascii_lowered(account.str())] = std::move(caps);
      }
      continue;
    }
    auto section = std::find_if(sections.begin(), sections.end(),
                                [&](const Section& sec) { return sec.name == name.str(); });
    if (section == sections.end()) {
      return fail(Errc::config_error, fmt::format("[{}]: unknown section", name.str()));
    }
    const auto* table = node.as_table();
    if (table == nullptr) {
      return fail(Errc::config_error,
                  fmt::format("{}: expected a [{}] table", name.str(), name.str()));
    }
    for (const auto& [key, value] : *table) {
      auto setter = section->keys.find(key.str());
      if (setter == section->keys.end()) {
        return bad(section->name, key.str(), "unknown key");
      }
      IOP_TRY(setter->second(value));
    }
  }

  c.oauth.client_secret = Secret(std::move(client_secret));
  if (log_format == "text") {
    c.log.format = LogFormat::text;
  } else if (log_format == "json") {
    c.log.format = LogFormat::json;
  } else {
    return bad(l, "format", fmt::format("expected \"text\" or \"json\", got \"{}\"", log_format));
  }
  constexpr std::array<std::string_view, 6> levels{"trace", "debug", "info",
                                                   "warn",  "error", "off"};
  if (std::find(levels.begin(), levels.end(), c.log.level) == levels.end()) {
    return bad(
        l, "level",
        fmt::format("expected trace, debug, info, warn, error or off, got \"{}\"", c.log.level));
  }
  if (c.redis.timeout.count() <= 0) {
    return bad(r, "timeout", "must be more than 0ms");
  }
  if (c.server.idle_timeout < std::chrono::minutes(30)) {
    return bad(s, "idle_timeout", "must be at least 30m (RFC 9051 §5.4)");
  }
  if (c.server.preauth_timeout.count() <= 0) {
    return bad(s, "preauth_timeout", "must be more than 0ms");
  }
  if (c.upstream.timeout.count() <= 0) {
    return bad(u, "timeout", "must be more than 0ms");
  }
  if (c.upstream.prewarm_window < std::chrono::seconds(1)) {
    return bad(u, "prewarm_window", "must be at least 1s");
  }
  if (!c.server.listen_tls && !c.server.listen_starttls) {
    return bad(s, "listen_tls", "set listen_tls or listen_starttls, or the proxy listens nowhere");
  }
  if (c.redis.lock_timeout.count() <= 0) {
    return bad(r, "lock_timeout", "must be more than 0ms");
  }
  if (c.oauth.http_timeout.count() <= 0) {
    return bad(o, "http_timeout", "must be more than 0ms");
  }
  if (c.oauth.background_refresh < std::chrono::seconds(1)) {
    return bad(o, "background_refresh", "must be at least 1s");
  }
  if (c.oauth.keepalive < std::chrono::hours(1)) {
    // Below an hour every background pass (or login) would refresh the account: the endpoint's
    // throttling, not the 90-day revocation, would then be the limit.
    return bad(o, "keepalive", "must be at least 1h (the default is 7d)");
  }
  if (c.oauth.keepalive > std::chrono::hours(24 * 80)) {
    return bad(o, "keepalive",
               "must be under 80d: Microsoft revokes refresh tokens unused for 90 days");
  }
  if (c.storage.database.empty() || c.storage.key_file.empty()) {
    return bad(st, c.storage.database.empty() ? "database" : "key_file", "must not be empty");
  }
  if (!c.storage.postgres() && !c.storage.password_file.empty()) {
    return bad(st, "password_file", "is for a PostgreSQL database (postgresql://...) only");
  }
  if (c.storage.connection_log.empty()) {
    c.storage.connection_log = c.storage.database;
  } else if (!c.storage.postgres()) {
    return bad(st, "connection_log",
               "is for a PostgreSQL database only (with SQLite the log is in the database file)");
  } else if (is_postgres_url(c.storage.connection_log.native()) &&
             c.storage.connection_log != c.storage.database) {
    // One password file, one database: a log elsewhere in PostgreSQL is not a setup this
    // program supports (and would get the wrong password).
    return bad(st, "connection_log",
               "may be a local SQLite file, or the same URL as database (the default); not "
               "another PostgreSQL database");
  }
  if (c.oauth.scope.find("offline_access") == std::string::npos) {
    return bad(o, "scope", "must include offline_access, or no refresh token is issued");
  }

  // The default profile is [oauth] + [upstream], as before profiles existed; accounts stored
  // before them map to it. Its endpoints may use "{tenant}" too.
  auth::ProviderProfile fallback;
  fallback.name = std::string(auth::default_provider);
  fallback.flow = auth::Flow::delegated;
  fallback.tenant = "common";
  fallback.token_endpoint = c.oauth.token_endpoint;
  fallback.authorize_endpoint = c.oauth.authorize_endpoint;
  fallback.device_endpoint = c.oauth.device_endpoint;
  fallback.client_id = c.oauth.client_id;
  fallback.client_secret = c.oauth.client_secret;
  fallback.scope = c.oauth.scope;
  fallback.send_scope = c.oauth.send_scope;
  fallback.upstream_host = c.upstream.host;
  fallback.upstream_port = c.upstream.port;
  fallback.smtp_host = c.upstream.smtp_host;
  fallback.smtp_port = c.upstream.smtp_port;
  fallback.smtp_tls = c.upstream.smtp_tls;
  if (!valid_smtp_tls(c.upstream.smtp_tls)) {
    return bad(
        u, "smtp_tls",
        fmt::format("expected \"starttls\" or \"implicit\", got \"{}\"", c.upstream.smtp_tls));
  }
  if (c.server.hostname.empty() ||
      c.server.hostname.find_first_of(" \t\r\n") != std::string::npos) {
    return bad(s, "hostname", "must be one word (a domain name), not empty");
  }
  c.providers.emplace(fallback.name, fallback);
  for (const auto& [name, profile] : auth::builtin_profiles()) {
    c.providers.emplace(name, profile);
  }
  if (provider_tables != nullptr) {
    for (const auto& [key, node] : *provider_tables) {
      const std::string name(key.str());
      const std::string section = "providers." + name;
      const auto* table = node.as_table();
      if (table == nullptr) {
        return fail(Errc::config_error, fmt::format("{}: expected a [{}] table", section, section));
      }
      if (name == auth::default_provider) {
        return fail(Errc::config_error,
                    fmt::format("[{}]: the default provider is configured by [oauth] and "
                                "[upstream]; choose another name",
                                section));
      }
      if (name.empty() || !auth::valid_tenant(name)) {  // same alphabet: letters, digits, . -
        return fail(
            Errc::config_error,
            fmt::format("[{}]: a provider name has letters, digits, '.' and '-' only", section));
      }
      auto it = c.providers.find(name);
      if (it == c.providers.end()) {
        auth::ProviderProfile fresh = fallback;
        fresh.name = name;
        it = c.providers.emplace(name, std::move(fresh)).first;
      }
      IOP_TRY(apply_provider_table(*table, it->second, section));
      IOP_TRY(validate_profile(it->second, section));
    }
  }
  return c;
}

Result<Config> load_config(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return fail(Errc::config_error, fmt::format("cannot read config file {}", file.string()));
  }
  std::ostringstream text;
  text << in.rdbuf();
  const auto absolute = fs::absolute(file);
  auto config = parse_config(text.str(), absolute.parent_path(), file.string());
  if (config) {
    config->file = absolute;
  }
  return config;
}

Result<std::optional<fs::path>> locate_config(const std::optional<fs::path>& flag) {
  if (flag) {
    if (!fs::exists(*flag)) {
      return fail(Errc::config_error, fmt::format("config file {} does not exist", flag->string()));
    }
    return std::optional<fs::path>(*flag);
  }
  if (const char* env = std::getenv("IMAP_OAUTH2_PROXY_CONFIG"); env != nullptr && *env != '\0') {
    if (!fs::exists(env)) {
      return fail(Errc::config_error,
                  fmt::format("IMAP_OAUTH2_PROXY_CONFIG names {}, which does not exist", env));
    }
    return std::optional<fs::path>(env);
  }
  if (fs::exists("imap-oauth2-proxy.toml")) {
    return std::optional<fs::path>("imap-oauth2-proxy.toml");
  }
  fs::path xdg;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x != nullptr && *x != '\0') {
    xdg = x;
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    xdg = fs::path(home) / ".config";
  }
  if (!xdg.empty()) {
    auto candidate = xdg / "imap-oauth2-proxy" / "imap-oauth2-proxy.toml";
    if (fs::exists(candidate)) {
      return std::optional<fs::path>(candidate);
    }
  }
  return std::optional<fs::path>{};
}

Result<Config> load_effective_config(const std::optional<fs::path>& flag) {
  IOP_TRY_ASSIGN(auto located, locate_config(flag));
  if (located) {
    return load_config(*located);
  }
  fs::path data;
  if (const char* x = std::getenv("XDG_DATA_HOME"); x != nullptr && *x != '\0') {
    data = x;
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    data = fs::path(home) / ".local/share";
  } else {
    data = fs::current_path();
  }
  return default_config(data / "imap-oauth2-proxy");
}

std::string default_config_text() {
  return R"(# imap-oauth2-proxy configuration. Relative paths resolve against this file's folder.

[server]
listen_tls      = "127.0.0.1:1993"   # implicit TLS
listen_starttls = ""                 # e.g. "127.0.0.1:1143": plain + STARTTLS
# Sending mail (SMTP submission, off unless set): devices and clients authenticate with the
# account's email and local password; the proxy sends upstream with XOAUTH2.
# listen_submission  = "127.0.0.1:1587"   # plain + STARTTLS (AUTH only after STARTTLS)
# listen_submissions = "127.0.0.1:1465"   # implicit TLS
hostname        = "localhost"        # our name in SMTP greetings
certificate     = "certs/server.crt"
private_key     = "certs/server.key"
max_connections = 0                  # 0: derived from the open-file limit (2 per session)
preauth_timeout = "60s"
idle_timeout    = "30m"              # after login; RFC 9051 asks for at least 30 minutes
shutdown_grace  = "10s"              # on SIGTERM, sessions get this long to finish
allow_plaintext_loopback = false     # LOGIN on the plain port before STARTTLS, loopback only
login_cache_ttl = "5m"               # a verified local password is remembered this long
auth_failure_delay = "1s"

[upstream]
host    = "outlook.office365.com"
port    = 993
ca_file = ""                         # empty: the system trust store
timeout = "30s"                      # connect, TLS and login
# LIST "" "" after login catches Exchange's "authenticated but not connected" (a token for a
# mailbox the account cannot open). "auto": only against Microsoft Exchange (its hosts, or a
# greeting that names it); true: every server (Exchange behind another name with a custom
# banner); false: never.
probe   = "auto"
# Preconnect: while logins to a server happened in the last 10 minutes, keep one connection to
# it open ahead of need (TCP and TLS done, certificate checked, not logged in, no credential);
# the next login takes it and starts with AUTHENTICATE. Each waits at most 20 s, then is
# replaced; one the server closes is not replaced before the next login.
preconnect = true
# Pre-warm: for accounts with a client login within prewarm_window, keep one upstream connection
# logged in and hand it to the account's next login (no upstream TLS handshake nor XOAUTH2 round
# trip). Each warm connection is replaced before 25 minutes idle (servers may drop after 30) and
# before its token has less than [oauth] session_min_lifetime left.
prewarm = false
prewarm_window = "30m"
# Upstream connections per account (sessions and the warm one); at the limit a login without a
# warm connection gets NO [UNAVAILABLE]. 0: no limit. Providers cap it too (Gmail: 15).
max_connections_per_account = 0
smtp_host = "smtp.office365.com"     # where submission goes
smtp_port = 587
smtp_tls  = ""                       # "starttls" or "implicit"; empty: implicit on 465 only

[hide_capabilities]                  # capabilities left out of the login answer; a later
                                     # CAPABILITY command is relayed unfiltered
# "*" = ["IMAP4rev2"]
# "alice@contoso.com" = ["IMAP4rev2"]

[oauth]
token_endpoint       = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
device_endpoint      = "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"
authorize_endpoint   = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
client_id            = ""            # your app registration's Application (client) ID
client_secret        = ""            # empty for public clients
scope                = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
send_scope           = "https://outlook.office.com/SMTP.Send"  # asked at sign-in; "" to not send
refresh_margin       = "5m"          # refresh when less than this remains
session_min_lifetime = "45m"         # a token for a new IMAP session must live this long
keepalive            = "7d"          # refresh every account at least this often
background_refresh   = "60s"         # how often the background refresher looks

# Provider profiles: how accounts are authorized. [oauth] above (with [upstream]) is the profile
# "default"; built in are "microsoft" (delegated, tenant "common"), "microsoft-app" (client
# credentials) and "google". A section named like a built-in one overrides its keys; a new name
# starts from the default profile. "{tenant}" in an endpoint is the account's tenant
# (account add --tenant). Pick one per account with: account add EMAIL --provider NAME
#
# [providers.microsoft]
# client_id     = ""                 # your app registration's Application (client) ID
# tenant        = "common"           # or organizations, consumers, your domain or tenant id
# flow          = "delegated"        # or "app" (client credentials)
# token_endpoint     = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
# authorize_endpoint = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
# device_endpoint    = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode"
# scope         = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
# upstream_host = "outlook.office365.com"
# upstream_port = 993
# smtp_host     = "smtp.office365.com"
# smtp_port     = 587
# smtp_tls      = "starttls"

[storage]
database = "data/credentials.db"     # or "postgresql://user@host/db?sslmode=verify-full" (several instances)
key_file = "data/master.key"         # the same file on every instance sharing a database
# password_file  = "/etc/imap-oauth2-proxy/pgpassword"   # PostgreSQL: the password (else PGPASSFILE)
# connection_log = "data/connection-log.db"              # PostgreSQL: a local log for this instance
                                                         # (default: in the database, shared)

[redis]
url        = ""                      # e.g. "redis://127.0.0.1:6379/0"; empty: no cache
key_prefix = "imap-oauth2-proxy:"
timeout    = "250ms"
lock_timeout = "30s"                 # how long one instance's refresh holds others off

[audit]
connection_log  = true               # one row per client connection (imap-oauth2-proxy audit)
max_queued_rows = 100000             # kept in memory while the database refuses writes
keep_days       = 0                  # delete rows older than this many days; 0: keep all

[log]
level  = "info"
format = "text"                      # or "json"
)";
}

}  // namespace iop::app
