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

#include "app/audit_command.hpp"
#include "app/config.hpp"
#include "app/serve.hpp"
#include "app/services.hpp"
#include "app/version.hpp"
#include "auth/password_hash.hpp"
#include "auth/token_response.hpp"
#include "certs/local_cert.hpp"
#include "common/clock.hpp"
#include "common/email.hpp"
#include "common/log.hpp"

namespace iop::app {
namespace fs = std::filesystem;

namespace {

// A failed command: the one-line reason goes to stderr.
struct CommandError {
  std::string message;
};

[[noreturn]] void die(std::string message) { throw CommandError{std::move(message)}; }

template <class T>
T check(Result<T> r) {
  if (!r) {
    die(r.error().message);
  }
  if constexpr (!std::is_void_v<T>) {
    return std::move(*r);
  }
}

std::string normalized(const std::string& email) { return check(normalize_email(email)); }

// One line from stdin without its line ending. With a terminal, prompts with echo off.
Secret read_secret_line(std::string_view prompt) {
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  termios saved{};
  if (tty) {
    std::cerr << prompt << ": " << std::flush;
    ::tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  const bool got = static_cast<bool>(std::getline(std::cin, line));
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::cerr << '\n';
  }
  Secret value(std::move(line));
  if (!got && value.empty()) {
    die(fmt::format("expected {} on standard input", prompt));
  }
  std::string trimmed = value.reveal();
  while (!trimmed.empty() && (trimmed.back() == '\r' || trimmed.back() == '\n')) {
    trimmed.pop_back();
  }
  return Secret(std::move(trimmed));
}

std::string format_time(std::int64_t unix_seconds) {
  if (unix_seconds <= 0) {
    return "-";
  }
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

struct Options {
  std::optional<fs::path> config;
  bool verbose = false;
  std::string log_format;  // overrides [log] format when set
};

void apply_log_flags(Config& config, const Options& opts);

Config load(const Options& opts) {
  auto config = check(load_effective_config(opts.config));
  apply_log_flags(config, opts);
  return config;
}

void setup_cli_logging(const Config& config, bool verbose, bool serving) {
  // Commands print their results; their log lines are for trouble, unless asked.
  const std::string level = serving || verbose ? config.log.level : "warn";
  check(setup_logging(level, config.log.format));
}

void apply_log_flags(Config& config, const Options& opts) {
  if (opts.log_format == "json") {
    config.log.format = LogFormat::json;
  } else if (opts.log_format == "text") {
    config.log.format = LogFormat::text;
  }
}

std::unique_ptr<Services> open_services(const Options& opts, bool serving = false,
                                        KeyPolicy policy = KeyPolicy::create_if_new) {
  auto config = load(opts);
  setup_cli_logging(config, opts.verbose, serving);
  return check(make_services(std::move(config), policy));
}

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
  const fs::path dir = dir_flag.value_or(fs::current_path());
  make_private_dir(dir);
  const auto config_path = dir / "imap-oauth2-proxy.toml";
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

// Proves a refresh token by using it once, then stores what the endpoint returned: the rotated
// refresh token when there is one. Nothing is stored when the proof fails.
int cmd_account_add(const std::string& email_arg, bool refresh_token_stdin, bool password_stdin,
                    bool local_password_stdin, const std::string& upstream, const Options& opts) {
  if (refresh_token_stdin == password_stdin) {
    die("give exactly one of --refresh-token-stdin or --password-stdin (interactive OAuth flows "
        "are not available in this version)");
  }
  const auto email = normalized(email_arg);
  auto services = open_services(opts);
  storage::Credentials row;
  row.email = email;
  if (!upstream.empty()) {
    const auto colon = upstream.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      die("--upstream: expected host:port");
    }
    row.upstream_host = upstream.substr(0, colon);
    try {
      row.upstream_port = std::stoi(upstream.substr(colon + 1));
    } catch (const std::exception&) {
      row.upstream_port = 0;
    }
    if (row.upstream_port < 1 || row.upstream_port > 65535) {
      die("--upstream: the port must be from 1 to 65535");
    }
  }

  if (refresh_token_stdin) {
    const auto refresh_token = read_secret_line("refresh token");
    if (!auth::plausible_token(refresh_token.reveal())) {
      die("the refresh token is empty or contains characters a token cannot have");
    }
    if (services->config.oauth.client_id.empty()) {
      die("[oauth] client_id is empty: set it to your app registration's Application (client) ID");
    }
    auto& endpoint = *services->endpoint;
    auto grant = auth::run_blocking<std::expected<auth::TokenGrant, auth::TokenError>>(
        [&endpoint, &refresh_token, &email] { return endpoint.refresh(refresh_token, email); });
    if (!grant) {
      die(fmt::format("the refresh token did not work, nothing was stored: {}",
                      auth::to_error(grant.error()).message));
    }
    const auto now = std::chrono::system_clock::now();
    row.use_oauth = true;
    row.access_token = grant->access_token;
    row.token_expiry = to_unix_seconds(now) + grant->expires_in.count();
    row.refresh_token = grant->refresh_token ? *grant->refresh_token : refresh_token;
    row.refreshed_at_ms = to_unix_millis(now);
  } else {
    row.use_oauth = false;
    row.password = read_secret_line("upstream password");
    if (row.password.empty()) {
      die("the upstream password is empty");
    }
  }
  std::optional<std::string> local_hash;
  if (local_password_stdin) {
    local_hash = check(auth::hash_password(read_secret_line("local password")));
  }
  check(services->store->upsert_account(row));
  if (local_hash) {
    check(services->store->set_local_password_hash(email, *local_hash));
  }
  if (services->cache) {
    services->cache->erase(email);  // a stale entry must not outlive a re-authorization
  }
  if (row.use_oauth) {
    std::cout << "added " << email << ": refresh token proven, access token valid until "
              << format_time(row.token_expiry) << "\n";
  } else {
    std::cout << "added " << email << " (password upstream)\n";
  }
  if (!local_hash) {
    std::cout << "set the password mail clients will use with: imap-oauth2-proxy account passwd "
              << email << "\n";
  }
  return 0;
}

int cmd_account_list(const std::string& format, const Options& opts) {
  auto services = open_services(opts);
  const auto accounts = check(services->store->list());
  if (format == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& a : accounts) {
      out.push_back({{"email", a.email},
                     {"type", a.use_oauth ? "oauth" : "password"},
                     {"status", storage::to_string(a.status)},
                     {"status_reason", a.status_reason},
                     {"token_expiry", a.token_expiry},
                     {"last_refresh_ms", a.refreshed_at_ms},
                     {"local_password", a.has_local_password},
                     {"upstream", a.upstream_host.empty()
                                      ? std::string{}
                                      : fmt::format("{}:{}", a.upstream_host, a.upstream_port)}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<36} {:<8} {:<12} {:<21} {:<21} {}\n", "EMAIL", "TYPE", "STATUS",
                           "TOKEN EXPIRES", "LAST REFRESH", "LOCAL PASSWORD");
  for (const auto& a : accounts) {
    std::cout << fmt::format("{:<36} {:<8} {:<12} {:<21} {:<21} {}\n", a.email,
                             a.use_oauth ? "oauth" : "password", storage::to_string(a.status),
                             a.use_oauth ? format_time(a.token_expiry) : "-",
                             a.use_oauth ? format_time(a.refreshed_at_ms / 1000) : "-",
                             a.has_local_password ? "set" : "not set");
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
  init->add_option("--dir", init_dir, "folder for the config file (default: current folder)");
  add_common(init);

  auto* serve_cmd = app.add_subcommand("serve", "run the proxy in the foreground");
  add_common(serve_cmd);

  auto* account = app.add_subcommand("account", "manage upstream accounts");
  account->require_subcommand(1);
  std::string email;
  bool refresh_token_stdin = false, password_stdin = false, local_password_stdin = false;
  std::string upstream;
  auto* add = account->add_subcommand("add", "add or re-authorize an account");
  add->add_option("EMAIL", email, "the account's email address")->required();
  add->add_flag("--refresh-token-stdin", refresh_token_stdin,
                "import a refresh token read from stdin (proven by one refresh first)");
  add->add_flag("--password-stdin", password_stdin,
                "an upstream account that still uses a password, read from stdin");
  add->add_flag("--local-password-stdin", local_password_stdin,
                "also read the local (client) password from the next stdin line");
  add->add_option("--upstream", upstream, "host:port of this account's IMAP server");
  add_common(add);

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

  AuditOptions audit_opts;
  auto* audit = add_audit_command(app, audit_opts);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (init->parsed()) return cmd_init(init_dir, opts);
    if (serve_cmd->parsed()) return cmd_serve(opts);
    if (add->parsed()) {
      return cmd_account_add(email, refresh_token_stdin, password_stdin, local_password_stdin,
                             upstream, opts);
    }
    if (list->parsed()) return cmd_account_list(list_format, opts);
    if (remove->parsed()) return cmd_account_remove(email, opts);
    if (passwd->parsed()) return cmd_account_passwd(email, opts);
    if (token->parsed()) return cmd_token(email, opts);
    if (audit->parsed()) return run_audit(audit_opts);
  } catch (const CommandError& e) {
    std::cerr << "imap-oauth2-proxy: " << e.message << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "imap-oauth2-proxy: internal error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace iop::app
