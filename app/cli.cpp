#include "app/cli.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/account_command.hpp"
#include "app/audit_command.hpp"
#include "app/cli_support.hpp"
#include "app/config.hpp"
#include "app/doctor.hpp"
#include "app/serve.hpp"
#include "app/services.hpp"
#include "app/version.hpp"
#include "auth/password_hash.hpp"
#include "auth/token_response.hpp"
#include "certs/local_cert.hpp"
#include "common/clock.hpp"
#include "common/database_url.hpp"
#include "common/email.hpp"
#include "common/host_port.hpp"
#include "common/log.hpp"
#include "storage/audit_log.hpp"

namespace iop::app {
namespace fs = std::filesystem;

namespace {

// Creates `dir` and its missing parents with mode 0700 whatever the umask: the folder will hold
// the config (maybe a client secret) and, by default, the key and the database.
void make_private_dir(const fs::path& dir) {
  fs::path current;
  for (const auto& part : dir) {
    current /= part;
    if (::mkdir(current.c_str(), 0700) == 0) {
      if (::chmod(current.c_str(), 0700) != 0) {  // mkdir's mode is masked by the umask
        die(fmt::format("cannot set the mode of {}: {}", current.string(), std::strerror(errno)));
      }
    } else if (errno != EEXIST) {
      die(fmt::format("cannot create {}: {}", current.string(), std::strerror(errno)));
    }
  }
}

// Writes a new file with mode 0600 whatever the umask. O_EXCL: never follows a symlink planted
// there, never truncates a config someone wrote in the meantime.
void write_private_file(const fs::path& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    die(fmt::format("cannot create {}: {}", path.string(), std::strerror(errno)));
  }
  bool ok = ::fchmod(fd, 0600) == 0;
  std::size_t off = 0;
  while (ok && off < text.size()) {
    const auto n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    ok = n > 0;
    off += ok ? static_cast<std::size_t>(n) : 0;
  }
  const int err = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) {
    ::unlink(path.c_str());
    die(fmt::format("cannot write {}: {}", path.string(), std::strerror(err)));
  }
}

int cmd_init(const std::optional<fs::path>& dir_flag, const Options& opts) {
  if (dir_flag && opts.config) {
    die("give --dir (a folder for imap-oauth2-proxy.toml) or --config (the file), not both");
  }
  if (opts.config && (fs::is_directory(*opts.config) || opts.config->filename().empty())) {
    die(fmt::format("--config names the file to write, and {} is a folder: use --dir {}",
                    opts.config->string(), opts.config->string()));
  }
  // --config names the file to write; its folder is where the relative paths in it resolve.
  const fs::path config_path =
      opts.config ? fs::absolute(*opts.config)
                  : dir_flag.value_or(fs::current_path()) / "imap-oauth2-proxy.toml";
  const fs::path dir = config_path.parent_path();
  make_private_dir(dir);
  if (!fs::exists(config_path)) {
    write_private_file(config_path, default_config_text());
    std::cout << "wrote " << config_path.string() << " (mode 0600)\n";
  } else {
    std::cout << "kept existing " << config_path.string() << "\n";
  }
  Options with_file = opts;
  with_file.config = config_path;
  auto config = load(with_file);
  setup_cli_logging(config, opts.verbose, false);
  const bool had_key = fs::exists(config.storage.key_file);
  if (!had_key && fs::exists(config.storage.database)) {
    die(
        fmt::format("the database {} exists but its master key {} does not; restore the key "
                    "rather than create a new one",
                    config.storage.database.string(), config.storage.key_file.string()));
  }
  auto services = check(make_services(std::move(config), KeyPolicy::create_if_new));
  const auto& cfg = services->config;
  std::cout << (had_key ? "kept existing master key " : "created master key ")
            << cfg.storage.key_file.string() << " (mode 0600)\n"
            << "database " << cfg.storage.database.string() << " ready\n";
  // The private key's folder: nobody else may swap the key or the CA clients trust.
  make_private_dir(cfg.server.certificate.parent_path());
  const bool created_cert =
      check(certs::ensure_server_certificate(cfg.server.certificate, cfg.server.private_key));
  std::cout << (created_cert ? "created" : "kept existing") << " TLS certificate "
            << cfg.server.certificate.string() << " for localhost, 127.0.0.1 and ::1; clients "
            << "that verify certificates should trust "
            << certs::ca_certificate_path(cfg.server.certificate).string() << "\n";
  // The absolute path, so the printed command works from any folder.
  const auto shown = fs::absolute(config_path).lexically_normal().string();
  std::cout << "\nnext steps:\n"
            << "  1. set [oauth] client_id in " << shown
            << " (your app registration's Application ID)\n"
            << "  2. imap-oauth2-proxy account add you@example.com --config " << shown << "\n";
  return 0;
}

// "microsoft (contoso.com)" and "delegated", as far as the configuration still knows the
// account's provider.
std::pair<std::string, std::string> provider_columns(const Config& config,
                                                     const storage::AccountSummary& a) {
  if (!a.use_oauth) {
    return {"-", "password"};
  }
  std::string provider = a.provider;
  if (!a.tenant.empty()) {
    provider += " (" + a.tenant + ")";
  }
  const auto profile = config.provider(a.provider);
  return {provider, profile ? std::string(auth::to_string((*profile)->flow)) : "unknown"};
}

int cmd_account_list(const std::string& format, const Options& opts) {
  // A read creates no SQLite key and database (a config copied elsewhere would get an empty
  // pair). With PostgreSQL the database's key check decides, as on any instance's first command.
  const auto loaded = load(opts);
  if (!loaded.storage.postgres() && !fs::exists(loaded.storage.database)) {
    // Opening would create an empty one and list nothing: a wrong path or a lost database
    // would look like a setup without accounts.
    die(
        fmt::format("no database at {}: check [storage] database in {}, or run "
                    "'imap-oauth2-proxy init' for a new setup",
                    loaded.storage.database.string(),
                    loaded.file.empty() ? std::string("the config") : loaded.file.string()));
  }
  const auto policy = loaded.storage.postgres() ? KeyPolicy::create_if_new : KeyPolicy::must_exist;
  auto services = open_services(opts, false, policy);
  const auto accounts = check(services->store->list());
  const auto& config = services->config;
  if (format == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& a : accounts) {
      const auto [provider, flow] = provider_columns(config, a);
      out.push_back({{"email", a.email},
                     {"type", a.use_oauth ? "oauth" : "password"},
                     {"provider", a.use_oauth ? a.provider : ""},
                     {"tenant", a.tenant},
                     {"client_id", a.client_id},
                     {"flow", flow},
                     {"signed_in_as", a.signed_in_as},
                     {"status", a.verified ? storage::to_string(a.status) : "corrupt"},
                     {"verified", a.verified},
                     {"status_reason", a.status_reason},
                     {"token_expiry", a.token_expiry},
                     {"last_refresh_ms", a.refreshed_at_ms},
                     {"local_password", a.has_local_password},
                     {"upstream", a.upstream_host.empty()
                                      ? std::string{}
                                      : format_host_port(a.upstream_host, a.upstream_port)}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<36} {:<8} {:<24} {:<10} {:<12} {:<21} {:<21} {}\n", "EMAIL", "TYPE",
                           "PROVIDER", "FLOW", "STATUS", "TOKEN EXPIRES", "LAST REFRESH",
                           "LOCAL PASSWORD");
  for (const auto& a : accounts) {
    const auto [provider, flow] = provider_columns(config, a);
    std::cout << fmt::format("{:<36} {:<8} {:<24} {:<10} {:<12} {:<21} {:<21} {}\n", a.email,
                             a.use_oauth ? "oauth" : "password", provider, flow,
                             a.verified ? storage::to_string(a.status) : "corrupt",
                             a.use_oauth ? format_time(a.token_expiry) : "-",
                             a.use_oauth ? format_time(a.refreshed_at_ms / 1000) : "-",
                             a.has_local_password ? "set" : "not set");
    if (!a.signed_in_as.empty()) {
      std::cout << "    shared mailbox, signed in as " << a.signed_in_as << "\n";
    }
    if (a.status == storage::AccountStatus::needs_reauth && !a.status_reason.empty()) {
      std::cout << "    reason: " << a.status_reason << "\n";
    }
  }
  return 0;
}

int cmd_account_remove(const std::string& email_arg, const Options& opts) {
  const auto email = normalized(email_arg);
  auto services = open_services(opts, false, KeyPolicy::must_exist);
  if (!check(services->store->remove(email))) {
    die(fmt::format("no account {}", email));
  }
  if (services->cache) {
    services->cache->erase(email);
  }
  record_event(*services, storage::AuditEvent::account_removed, email, "");
  std::cout << "removed " << email << "\n";
  return 0;
}

int cmd_account_passwd(const std::string& email_arg, const Options& opts) {
  const auto email = normalized(email_arg);
  auto services = open_services(opts, false, KeyPolicy::must_exist);
  check(services->store->get(email));  // the account must exist (and decrypt)
  auto password = read_secret_line("new local password");
  if (::isatty(STDIN_FILENO) != 0) {
    if (!(read_secret_line("repeat it") == password)) {
      die("the two passwords differ; nothing changed");
    }
  }
  const auto hash = check(auth::hash_password(password));
  check(services->store->set_local_password_hash(email, hash));
  record_event(*services, storage::AuditEvent::passwd_changed, email, "");
  std::cout << "local password of " << email << " set\n";
  return 0;
}

int cmd_token(const std::string& email_arg, const Options& opts) {
  const auto email = normalized(email_arg);
  auto services = open_services(opts, false, KeyPolicy::must_exist);
  auto& tokens = *services->tokens;
  auto token = check(auth::run_blocking<Result<auth::FreshToken>>(
      [&tokens, &email] { return tokens.ensure_fresh_token(email, auth::TokenUse::immediate); }));
  if (token.is_password) {
    die(fmt::format("{} uses a password upstream; it has no access token", email));
  }
  std::cout << token.secret.reveal() << std::endl;
  return 0;
}

// `migrate --to URL`: the accounts and the connection log of this configuration's SQLite
// database into PostgreSQL.
int cmd_migrate(const std::string& to, const std::optional<fs::path>& password_file, bool keep_log,
                const Options& opts) {
  const Config config = load(opts);
  if (config.storage.postgres()) {
    die("[storage] database is PostgreSQL already; migrate copies from an SQLite database");
  }
  if (!is_postgres_url(to)) {
    die("--to takes a PostgreSQL URL: postgresql://user@host/db");
  }
  auto key = check(storage::MasterKey::load(config.storage.key_file));
  const Secret password = password_file ? check(read_database_password(*password_file)) : Secret();
  const auto from = config.storage.database;
  std::size_t copied = 0;
  const auto copy_accounts = [&]() -> Result<void> {
    IOP_TRY_ASSIGN(copied, storage::copy_credentials(from, to, password, key));
    return {};
  };
  std::optional<storage::VerifyReport> log;
  if (keep_log) {
    check(copy_accounts());
  } else {
    // The log's rows go in first and commit last, after the accounts: a failure anywhere leaves
    // the target as it was, and migrate can run again.
    log = check(storage::copy_connection_log(from, to, password, key, copy_accounts));
  }
  std::cout << "copied " << copied << " account(s) from " << from.string()
            << ": every row read back identical, and every account verifies as before\n";
  if (log) {
    std::cout << "copied the connection log: " << log->rows << " row(s), head " << log->head_id
              << ":" << log->head_hash << ", verified in PostgreSQL as in the source\n";
  }
  std::cout << "To run on the new database, set in [storage]:\n"
            << "  database = \"" << to << "\"\n";
  if (password_file) {
    // Absolute: a relative path in the config resolves against the config's folder.
    std::cout << "  password_file = \"" << fs::absolute(*password_file).string() << "\"\n";
  }
  if (keep_log) {
    std::cout << "  connection_log = \"" << fs::absolute(from).string()
              << "\"   # this instance's log stays in the old file\n";
  }
  if (keep_log) {
    std::cout << "The old file stays in use as this instance's connection log: keep it in place. "
                 "It also still holds every account's sealed tokens and local password hash, "
                 "which will go stale: once the new setup works, remove them with the sqlite3 "
                 "shell (DELETE FROM mail_credentials;).\n";
  } else {
    std::cout << "The old file still holds every account's sealed tokens and local password "
                 "hash, which will go stale: once the new setup works, keep it offline as an "
                 "archive or delete it.\n";
  }
  return 0;
}

int cmd_serve(const Options& opts) {
  auto services = open_services(opts, true);
  return serve(*services);
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"imap-oauth2-proxy: IMAP proxy and token service for OAuth2-only mail servers"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_line());
  Options opts;
  auto add_common = [&opts](CLI::App* cmd) {
    cmd->add_option("--config", opts.config, "configuration file");
    cmd->add_flag("-v,--verbose", opts.verbose, "log at the configured level, not just warnings");
    cmd->add_option("--log-format", opts.log_format, "text or json (default: [log] format)")
        ->check(CLI::IsMember({"text", "json"}));
  };

  std::optional<fs::path> init_dir;
  auto* init =
      app.add_subcommand("init", "write a config file, create the master key and database");
  init->add_option("--dir", init_dir,
                   "folder for imap-oauth2-proxy.toml (default: current folder; or give "
                   "--config FILE)");
  add_common(init);

  auto* serve_cmd = app.add_subcommand("serve", "run the proxy in the foreground");
  add_common(serve_cmd);

  auto* account = app.add_subcommand("account", "manage upstream accounts");
  account->require_subcommand(1);
  std::string email;
  AuthorizeFlags authorize;
  auto* add = account->add_subcommand("add", "authorize an account (or authorize it again)");
  add_authorize_flags(add, authorize);
  add_common(add);
  auto* reauth = account->add_subcommand(
      "reauth", "authorize an existing account again: new tokens, same local password");
  add_authorize_flags(reauth, authorize);
  add_common(reauth);

  std::string list_format = "table";
  auto* list = account->add_subcommand("list", "list accounts (no secrets)");
  list->add_option("--format", list_format, "table or json")
      ->check(CLI::IsMember({"table", "json"}));
  add_common(list);
  auto* remove = account->add_subcommand("remove", "delete an account and its tokens");
  remove->add_option("EMAIL", email)->required();
  add_common(remove);
  auto* passwd = account->add_subcommand("passwd", "set the local password mail clients use");
  passwd->add_option("EMAIL", email)->required();
  add_common(passwd);

  auto* token = app.add_subcommand("token", "print a fresh access token (for msmtp, mbsync...)");
  token->add_option("EMAIL", email)->required();
  add_common(token);

  std::string doctor_format = "text";
  auto* doctor = app.add_subcommand(
      "doctor", "check the config, storage, Redis, endpoints, upstreams, certificate and accounts");
  doctor->add_option("--format", doctor_format, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  add_common(doctor);

  std::string migrate_to;
  std::optional<fs::path> migrate_password_file;
  auto* migrate = app.add_subcommand(
      "migrate", "copy the accounts of the SQLite database into PostgreSQL (issue #10)");
  migrate->add_option("--to", migrate_to, "postgresql://user@host/db (no password in it)")
      ->required();
  migrate->add_option("--password-file", migrate_password_file,
                      "a file holding the PostgreSQL password (default: PGPASSFILE)");
  bool migrate_keep_log = false;
  migrate->add_flag("--keep-connection-log", migrate_keep_log,
                    "copy the accounts only; the connection log stays in the SQLite file");
  add_common(migrate);

  AuditOptions audit_opts;
  auto* audit = add_audit_command(app, audit_opts);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, like every other error, and the usage exit code (2): scripts can tell a
    // command line that never ran from a command that failed (1).
    std::cerr << "imap-oauth2-proxy: " << e.what() << " (run with --help for usage)\n";
    return 2;
  }

  try {
    if (init->parsed()) return cmd_init(init_dir, opts);
    if (serve_cmd->parsed()) return cmd_serve(opts);
    if (add->parsed()) return run_account_authorize(authorize, false, opts);
    if (reauth->parsed()) return run_account_authorize(authorize, true, opts);
    if (list->parsed()) return cmd_account_list(list_format, opts);
    if (remove->parsed()) return cmd_account_remove(email, opts);
    if (passwd->parsed()) return cmd_account_passwd(email, opts);
    if (token->parsed()) return cmd_token(email, opts);
    if (audit->parsed()) return run_audit(audit_opts);
    if (doctor->parsed()) return run_doctor(opts, doctor_format);
    if (migrate->parsed())
      return cmd_migrate(migrate_to, migrate_password_file, migrate_keep_log, opts);
  } catch (const CommandError& e) {
    std::cerr << "imap-oauth2-proxy: " << e.message << "\n";
    return e.exit_code;
  } catch (const std::exception& e) {
    std::cerr << "imap-oauth2-proxy: internal error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace iop::app
