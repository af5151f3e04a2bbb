#pragma once
// Configuration: the TOML file of ARCHITECTURE.md loaded into validated plain structs. Durations
// are std::chrono, relative paths are resolved against the config file's folder, secrets are
// Secret. Every error names the key and says why: `[redis] timeout: expected a duration like
// "250ms", got "fast"`.

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/provider.hpp"
#include "common/host_port.hpp"
#include "common/log.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"
#include "proxy/probe.hpp"

namespace iop::app {

using iop::HostPort;

struct ServerConfig {
  std::optional<HostPort> listen_tls = HostPort{"127.0.0.1", 1993};
  std::optional<HostPort> listen_starttls;
  // Submission (issue #11), off unless set: plain + STARTTLS (RFC 6409) and implicit TLS
  // (RFC 8314), e.g. "127.0.0.1:1587" and "127.0.0.1:1465".
  std::optional<HostPort> listen_submission;
  std::optional<HostPort> listen_submissions;
  // Our name in the SMTP greeting and EHLO reply.
  std::string hostname = "localhost";
  std::filesystem::path certificate;
  std::filesystem::path private_key;
  // 0: derived at start from the open-file limit (app/serve.cpp, derived_max_connections()).
  int max_connections = 0;
  std::chrono::milliseconds preauth_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(30)};  // RFC 9051: >= 30 min
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(10)};
  bool allow_plaintext_loopback = false;  // LOGIN before STARTTLS, for loopback clients only
  std::chrono::milliseconds login_cache_ttl{std::chrono::minutes(5)};
  std::chrono::milliseconds auth_failure_delay{std::chrono::seconds(1)};
};

struct UpstreamConfig {
  std::string host = "outlook.office365.com";
  int port = 993;
  std::filesystem::path ca_file;  // empty: the system trust store
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  // LIST "" "" after login, for Exchange's "authenticated but not connected": true, false, or
  // "auto" (the default): against Microsoft Exchange only (proxy/probe.hpp).
  proxy::Probe probe = proxy::Probe::exchange;
  // Preconnect (issue #9): one spare connection per upstream server (TLS up, not logged in)
  // while logins to it are recent, taken by the next login (proxy/spare_policy.hpp).
  bool preconnect = true;
  // Pre-warm (issue #9 item 5, opt-in): one upstream connection kept logged in per account with
  // a client login within prewarm_window, handed to that account's next login.
  bool prewarm = false;
  std::chrono::milliseconds prewarm_window{std::chrono::minutes(30)};
  // Live upstream IMAP connections per account, warm ones included; 0: no limit (the default:
  // the provider's real limit is shared with clients that do not go through this proxy, so
  // only the operator knows the right number; Gmail allows 15 per account).
  int max_connections_per_account = 0;
  // The default profile's SMTP submission server (issue #11); smtp_tls "" follows the port.
  std::string smtp_host = "smtp.office365.com";
  int smtp_port = 587;
  std::string smtp_tls;
};

struct OAuthConfig {
  std::string token_endpoint = "https://login.microsoftonline.com/common/oauth2/v2.0/token";
  std::string device_endpoint = "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode";
  std::string authorize_endpoint = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize";
  std::string client_id;
  Secret client_secret;
  std::string scope = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
  // Asked for in interactive authorizations only (auth/provider.hpp); "" to not ask.
  std::string send_scope = "https://outlook.office.com/SMTP.Send";
  std::chrono::milliseconds refresh_margin{std::chrono::minutes(5)};
  std::chrono::milliseconds session_min_lifetime{std::chrono::minutes(45)};
  std::chrono::milliseconds keepalive{std::chrono::hours(24 * 7)};
  std::chrono::milliseconds background_refresh{std::chrono::minutes(1)};
  std::chrono::milliseconds http_timeout{std::chrono::seconds(10)};
  std::filesystem::path ca_file;  // for the token endpoint; empty: the system trust store
};

struct StorageConfig {
  // The credentials database: an SQLite file, or a PostgreSQL URL (postgresql://..., issue #10),
  // kept as written (not resolved against the config folder).
  std::filesystem::path database;
  std::filesystem::path key_file;
  // PostgreSQL only: a file holding the database password (empty: libpq's PGPASSFILE or
  // ~/.pgpass, or a server that asks for none).
  std::filesystem::path password_file;
  // Where the connection log is: `database` itself, unless set. With PostgreSQL that is one
  // chain every instance appends to; `connection_log` set to a file gives this instance a local
  // SQLite log instead.
  std::filesystem::path connection_log;

  [[nodiscard]] bool postgres() const;
};

struct RedisConfig {
  std::string url;  // empty: no cache
  std::string key_prefix = "imap-oauth2-proxy:";
  std::chrono::milliseconds timeout{250};
  // How long one instance's refresh lock holds the others off; a crashed holder delays other
  // instances' refreshes at most this long.
  std::chrono::milliseconds lock_timeout{std::chrono::seconds(30)};
};

// [audit]: the connection log (issue #8).
struct AuditConfig {
  // One row per client connection; false: none (events and the log itself are untouched).
  bool connection_log = true;
  // Rows kept in memory while the database refuses writes; beyond that the newest are dropped
  // and counted in a row once writing works again.
  int max_queued_rows = 100'000;
  // Retention: rows older than this many days are deleted (a whole prefix of the chain, with a
  // checkpoint so the rest still verifies); 0 keeps everything.
  int keep_days = 0;
};

struct LogConfig {
  std::string level = "info";
  LogFormat format = LogFormat::text;
};

struct Config {
  std::filesystem::path file;      // empty for the embedded default
  std::filesystem::path base_dir;  // relative paths resolve against this
  ServerConfig server;
  UpstreamConfig upstream;
  OAuthConfig oauth;
  StorageConfig storage;
  RedisConfig redis;
  AuditConfig audit;
  LogConfig log;
  // [hide_capabilities]: capabilities left out of the login answer, by account ("*": all); a
  // CAPABILITY command later in the session is relayed unfiltered.
  std::map<std::string, std::vector<std::string>> hide_capabilities;
  // Provider profiles by name: "default" ([oauth] + [upstream]), the built-in ones, and every
  // [providers.NAME] (a section named like a built-in one overrides its keys; a new name starts
  // from the default profile).
  std::map<std::string, auth::ProviderProfile, std::less<>> providers;

  // Problems worth a warning that do not stop the program (e.g. a config file holding a secret
  // that other users can read). The caller logs them once logging is set up.
  std::vector<std::string> warnings;

  // Whether the file holds a secret: a client secret ([oauth] or a provider) or a Redis
  // password.
  [[nodiscard]] bool holds_secret() const;

  // The profile called `name`, or Errc::config_error naming the ones there are.
  [[nodiscard]] Result<const auth::ProviderProfile*> provider(std::string_view name) const;
};

// The defaults, with paths resolved against `base_dir`.
Config default_config(const std::filesystem::path& base_dir);

// Parses and validates TOML text. `base_dir` resolves relative paths. Errc::config_error.
Result<Config> parse_config(std::string_view toml_text, const std::filesystem::path& base_dir,
                            std::string_view source_name = "config");

// Reads and parses `file`.
Result<Config> load_config(const std::filesystem::path& file);

// Which file to use: `flag` when given (must exist), else $IMAP_OAUTH2_PROXY_CONFIG, else
// ./imap-oauth2-proxy.toml, else $XDG_CONFIG_HOME (or ~/.config)/imap-oauth2-proxy/
// imap-oauth2-proxy.toml. nullopt when none exists and no flag was given.
Result<std::optional<std::filesystem::path>> locate_config(
    const std::optional<std::filesystem::path>& flag);

// Loads the located config, or the embedded default (data under $XDG_DATA_HOME, or
// ~/.local/share, /imap-oauth2-proxy) when there is none.
Result<Config> load_effective_config(const std::optional<std::filesystem::path>& flag);

// Warnings about the loaded file itself (a secret in a file others can read). Defined in
// app/config_secrets.cpp.
std::vector<std::string> config_file_warnings(const Config& config);

// The PostgreSQL password from [storage] password_file (empty when none is configured: libpq
// then reads PGPASSFILE or ~/.pgpass). Errc::config_error when the file cannot be read or other
// users may read it. One trailing newline is not part of the password. Defined in
// app/config_secrets.cpp.
Result<Secret> database_password(const Config& config);
// The password the connection log needs: database_password() when the log is in PostgreSQL,
// empty for a local SQLite log (whose commands must not depend on the password file).
Result<Secret> connection_log_password(const Config& config);
// The same for a password file named elsewhere (`migrate --password-file`).
Result<Secret> read_database_password(const std::filesystem::path& path);

// The commented file `init` writes.
std::string default_config_text();

}  // namespace iop::app
