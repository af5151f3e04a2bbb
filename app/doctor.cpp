#include "app/doctor.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>

#include "app/config.hpp"
#include "app/doctor_report.hpp"
#include "app/serve.hpp"
#include "app/services.hpp"
#include "auth/http_client.hpp"
#include "certs/local_cert.hpp"
#include "certs/tls_context.hpp"
#include "common/asio.hpp"
#include "common/host_port.hpp"
#include "common/log.hpp"
#include "common/sanitize.hpp"
#include "proxy/imap_response.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/smtp_session.hpp"
#include "proxy/smtp_upstream.hpp"
#include "storage/audit_log.hpp"
#include "storage/credentials_store.hpp"
#include "storage/token_cache.hpp"

namespace iop::app {

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using boost::system::error_code;

// The text every greeting of ours carries (proxy/responses.cpp: "* OK [...] imap-oauth2-proxy
// ready"): how a port in use is recognised as a running instance of this program.
constexpr std::string_view our_greeting = "imap-oauth2-proxy ready";
constexpr std::size_t max_line_bytes = 64 * 1024;
constexpr auto local_probe_timeout = 5s;

Check ok(std::string name, std::string detail) {
  return {std::move(name), CheckStatus::ok, std::move(detail), {}};
}
Check warn(std::string name, std::string detail, std::string fix = {}) {
  return {std::move(name), CheckStatus::warn, std::move(detail), std::move(fix)};
}
Check failed(std::string name, std::string detail, std::string fix) {
  return {std::move(name), CheckStatus::fail, std::move(detail), std::move(fix)};
}

// ---- running a small network exchange with a deadline --------------------------------------

// One IMAP conversation: connect, optional TLS, the greeting, optional CAPABILITY. Filled in as
// it goes, so a timeout can say how far it got.
struct ImapProbe {
  std::string host;
  int port = 0;
  bool tls = true;
  bool capability = true;

  bool done = false;
  std::string stage = "resolving the name";
  error_code ec;
  std::string verify_error;  // OpenSSL's reason when certificate verification failed
  std::string tls_version;
  std::string greeting;
  std::vector<std::string> capabilities;
  std::unique_ptr<proxy::ImapStream> stream;
  std::string buffer;
};

// `p` is a reference to the caller's probe, which outlives the call (GCC 12 mishandles owning
// by-value coroutine arguments in co_await expressions: docs/design.md).
awaitable<std::optional<std::string>> read_line(ImapProbe& probe) {
  ImapProbe* p = &probe;
  for (;;) {
    if (const auto end = p->buffer.find("\r\n"); end != std::string::npos) {
      std::string line = p->buffer.substr(0, end);
      p->buffer.erase(0, end + 2);
      co_return line;
    }
    if (p->buffer.size() > max_line_bytes) {
      p->ec = net::error::message_size;
      co_return std::nullopt;
    }
    char chunk[4096];
    const auto n = co_await p->stream->read_some(net::buffer(chunk), p->ec);
    if (p->ec) {
      co_return std::nullopt;
    }
    p->buffer.append(chunk, n);
  }
}

// `line` is a string literal: nothing owned crosses the co_await.
awaitable<void> write_line(ImapProbe& p, std::string_view line) {
  co_await p.stream->write_all(net::buffer(line.data(), line.size()), p.ec);
}

awaitable<void> run_imap_probe(std::shared_ptr<ImapProbe> p, net::ssl::context& tls) {
  auto executor = co_await net::this_coro::executor;
  tcp::resolver resolver(executor);
  const auto results = co_await resolver.async_resolve(
      p->host, std::to_string(p->port), net::redirect_error(net::use_awaitable, p->ec));
  if (p->ec) {
    co_return;
  }
  p->stage = "connecting";
  tcp::socket socket(executor);
  co_await net::async_connect(socket, results, net::redirect_error(net::use_awaitable, p->ec));
  if (p->ec) {
    co_return;
  }
  p->stream = std::make_unique<proxy::ImapStream>(std::move(socket), tls);
  if (p->tls) {
    p->stage = "in the TLS handshake";
    co_await p->stream->connect_tls(p->host, p->ec);
    SSL* const ssl = p->stream->native_handle();
    if (p->ec) {
      const long verify = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
      if (verify != X509_V_OK) {
        p->verify_error = X509_verify_cert_error_string(verify);
      }
      co_return;
    }
    p->tls_version = SSL_get_version(ssl);
  }
  p->stage = "waiting for the greeting";
  auto greeting = co_await read_line(*p);
  if (!greeting) {
    co_return;
  }
  p->greeting = std::move(*greeting);
  if (auto line = proxy::parse_response_line(p->greeting)) {
    if (auto caps = proxy::capabilities_in(*line)) {
      p->capabilities = std::move(*caps);
    }
  }
  if (p->capability) {
    p->stage = "waiting for the CAPABILITY answer";
    co_await write_line(*p, "d1 CAPABILITY\r\n");
    if (p->ec) {
      co_return;
    }
    for (;;) {
      auto line = co_await read_line(*p);
      if (!line) {
        co_return;
      }
      auto parsed = proxy::parse_response_line(*line);
      if (!parsed) {
        continue;
      }
      if (parsed->kind == proxy::ResponseKind::tagged) {
        break;
      }
      if (auto caps = proxy::capabilities_in(*parsed)) {
        p->capabilities = std::move(*caps);
      }
    }
    co_await write_line(*p, "d2 LOGOUT\r\n");
    p->ec.clear();  // the probe is complete; a failed goodbye does not matter
  }
  p->done = true;
  p->stream->close();
}

// Runs `probe` on its own io_context for at most `limit`. On timeout the socket is closed and
// the coroutine unwinds before this returns.
void run_bounded(const std::shared_ptr<ImapProbe>& probe, net::ssl::context& tls,
                 std::chrono::milliseconds limit) {
  net::io_context ioc;
  std::exception_ptr thrown;
  net::co_spawn(ioc, run_imap_probe(probe, tls),
                [&thrown](std::exception_ptr e) { thrown = std::move(e); });
  ioc.run_for(limit);
  if (!ioc.stopped()) {
    if (probe->stream) {
      probe->stream->close();
    }
    ioc.stop();
    if (!probe->done && !probe->ec) {
      probe->ec = net::error::timed_out;
    }
  }
  if (thrown) {
    try {
      std::rethrow_exception(thrown);
    } catch (const std::exception& e) {
      probe->ec = net::error::fault;
      probe->stage += std::string(" (") + e.what() + ")";
    }
  }
  // The stream's timers and socket belong to `ioc`: destroy them before it (found by ASan).
  probe->stream.reset();
}

// A plain TCP connect within `limit`: the error, or success.
error_code tcp_connect(const std::string& host, int port, std::chrono::milliseconds limit) {
  net::io_context ioc;
  error_code result = net::error::timed_out;
  tcp::socket socket(ioc);
  tcp::resolver resolver(ioc);
  resolver.async_resolve(host, std::to_string(port),
                         [&](const error_code& ec, const tcp::resolver::results_type& results) {
                           if (ec) {
                             result = ec;
                             return;
                           }
                           net::async_connect(
                               socket, results,
                               [&](const error_code& ec2, const tcp::endpoint&) { result = ec2; });
                         });
  ioc.run_for(limit);
  return result;
}

// ---- the checks ---------------------------------------------------------------------------

// The connection log's chain, read-only: a log that does not verify also refuses new rows
// (every append checks the head), so serve would queue them until it stops.
Check check_connection_log(const Config& config) {
  const std::string name = "connection log";
  auto key = storage::MasterKey::load(config.storage.key_file);
  if (!key) {
    return warn(name, "not checked: no usable master key");
  }
  auto password = connection_log_password(config);
  if (!password) {
    return failed(name, password.error().message, "fix [storage] password_file");
  }
  auto log = storage::AuditLog::open_for_verifying(config.storage.connection_log.native(),
                                                   *password, *key);
  if (!log) {
    return failed(name, log.error().message, "use the key file this database was created with");
  }
  auto report = (*log)->verify();
  if (!report) {
    return failed(name, report.error().message, "check the database file and the disk");
  }
  if (!report->intact) {
    return failed(
        name,
        fmt::format("BROKEN at row {}: {}", report->broken_at, sanitize_for_log(report->reason)),
        "the log was changed outside imap-oauth2-proxy: keep a copy of the file as "
        "evidence, see `imap-oauth2-proxy audit --verify`, and restore the database "
        "from a backup (new rows cannot be written until then)");
  }
  return ok(name, fmt::format("{} rows, chain intact, head {}:{}", report->rows, report->head_id,
                              report->head_hash));
}

Check check_config_mode(const Config& config) {
  struct stat st {};
  if (::stat(config.file.c_str(), &st) != 0) {
    return failed("config permissions", fmt::format("cannot stat {}", config.file.string()),
                  "check that the file exists and can be read");
  }
  return config_mode_check(config.file, st.st_mode, config.holds_secret());
}

struct Storage {
  std::unique_ptr<storage::CredentialsStore> store;
  std::vector<Check> checks;
};

// The master key and the database, opened only when both exist: doctor never creates them.
Storage check_storage(const Config& config) {
  Storage out;
  const auto& key_path = config.storage.key_file;
  const auto& db_path = config.storage.database;
  const bool have_key = fs::exists(key_path);
  // A PostgreSQL database is checked by connecting: nothing on this machine says it exists.
  const bool have_db = config.storage.postgres() || fs::exists(db_path);
  // `init --dir D` keeps an existing D/imap-oauth2-proxy.toml and creates what it names.
  const std::string init =
      config.file.filename() == "imap-oauth2-proxy.toml"
          ? fmt::format(
                "run `imap-oauth2-proxy init --dir {}` (it keeps the config and creates "
                "the key and the database)",
                config.file.parent_path().string())
          : std::string("run `imap-oauth2-proxy init` (it creates the key and the database)");
  if (!have_db) {
    out.checks.push_back(
        have_key ? ok("master key", fmt::format("{} present", key_path.string()))
                 : failed("master key", fmt::format("{} does not exist", key_path.string()), init));
    out.checks.push_back(
        failed("database", fmt::format("{} does not exist", db_path.string()), init));
    return out;
  }
  if (!have_key) {
    out.checks.push_back(
        failed("master key",
               fmt::format("{} does not exist, but the database {} does", key_path.string(),
                           db_path.string()),
               fmt::format("restore the key file the database was created with to {} (a new key "
                           "cannot read the stored tokens)",
                           key_path.string())));
    out.checks.push_back(
        warn("database", fmt::format("{} not opened: no master key", db_path.string())));
    return out;
  }
  auto key = storage::MasterKey::load(key_path);
  if (!key) {
    out.checks.push_back(failed("master key", key.error().message,
                                fmt::format("chmod 600 {} if it is readable by others; "
                                            "otherwise restore the original key file",
                                            key_path.string())));
    out.checks.push_back(
        warn("database", fmt::format("{} not opened: no usable master key", db_path.string())));
    return out;
  }
  auto password = database_password(config);
  if (!password) {
    out.checks.push_back(ok("master key", fmt::format("{} loads", key_path.string())));
    out.checks.push_back(failed("database", password.error().message,
                                "fix [storage] password_file, or remove it to use PGPASSFILE"));
    return out;
  }
  auto store = storage::CredentialsStore::open(db_path.native(), *password, std::move(*key));
  if (!store) {
    if (store.error().code == Errc::key_error) {
      out.checks.push_back(
          failed("master key",
                 fmt::format("{} does not decrypt the key check of {}", key_path.string(),
                             db_path.string()),
                 "use the key file this database was created with ([storage] key_file)"));
      out.checks.push_back(
          ok("database", fmt::format("{} opens, migrations current", db_path.string())));
    } else {
      out.checks.push_back(ok("master key", fmt::format("{} loads", key_path.string())));
      out.checks.push_back(failed(
          "database", store.error().message,
          config.storage.postgres()
              ? "check that the PostgreSQL server runs and accepts this user, the URL in "
                "[storage] database, and the password ([storage] password_file or PGPASSFILE)"
              : "check the file, its folder and the disk; restore it from a backup when it is "
                "damaged"));
    }
    return out;
  }
  out.store = std::move(*store);
  out.checks.push_back(
      ok("master key", fmt::format("{} decrypts the database's key check", key_path.string())));
  out.checks.push_back(
      ok("database", fmt::format("{} opens, migrations current", db_path.string())));
  out.checks.push_back(check_connection_log(config));
  return out;
}

Check check_redis(const Config& config) {
  if (config.redis.url.empty()) {
    return ok("redis", "not configured (tokens are cached in this process only)");
  }
  auto address = storage::parse_redis_url(config.redis.url);
  if (!address) {
    return failed("redis", address.error().message, "fix [redis] url");
  }
  const auto where =
      fmt::format("{}/{}", format_host_port(address->host, address->port), address->db);
  const std::string fix = fmt::format(
      "start Redis at {}, or fix [redis] url, or remove [redis] url to run without the cache",
      format_host_port(address->host, address->port));
  const auto limit = std::max<std::chrono::milliseconds>(config.redis.timeout, 1s);
  if (const auto ec = tcp_connect(address->host, address->port, limit); ec) {
    return failed("redis", fmt::format("{} unreachable: {}", where, ec.message()), fix);
  }
  // Reachable; now a real command, with the password and database of the URL. The key is not
  // needed to read a missing entry, so a throwaway one keeps the master key out of this.
  auto key = storage::MasterKey::from_bytes(Secret(std::string(storage::MasterKey::size, 'k')));
  auto cache = storage::TokenCache::create(
      storage::RedisSettings{config.redis.url, config.redis.key_prefix, config.redis.timeout},
      std::move(*key));
  if (!cache) {
    return failed("redis", cache.error().message, "fix [redis] url");
  }
  (*cache)->get("doctor-probe@invalid");
  if (!(*cache)->healthy()) {
    return failed("redis",
                  fmt::format("{} accepts connections but refused a command (wrong password or "
                              "database number?)",
                              where),
                  "check the password and database number in [redis] url");
  }
  return ok("redis", fmt::format("{} answers", where));
}

std::string replace_tenant(std::string url, const std::string& tenant) {
  for (auto pos = url.find("{tenant}"); pos != std::string::npos; pos = url.find("{tenant}")) {
    url.replace(pos, 8, tenant);
  }
  return url;
}

Check check_token_endpoint(const Config& config, const std::string& label, const std::string& url) {
  const std::string name = "token endpoint " + label;
  if (!auth::acceptable_endpoint_url(url)) {
    return failed(name, fmt::format("{} is neither https:// nor http:// to loopback", url),
                  "use the https:// URL of the token endpoint");
  }
  auth::HttpOptions options;
  options.timeout = config.oauth.http_timeout;
  options.connect_timeout = std::min<std::chrono::milliseconds>(config.oauth.http_timeout, 5s);
  options.ca_file = config.oauth.ca_file.string();
  // A POST without a grant: Microsoft (and any OAuth server) answers HTTP 400, which proves the
  // name resolves, the TLS certificate verifies and the server speaks HTTP.
  auto response = auth::post_form(url, {}, options);
  if (!response) {
    return failed(
        name, fmt::format("{}: {}", url, response.error().message),
        config.oauth.ca_file.empty()
            ? "check DNS, the network and any HTTPS proxy; for a private CA set [oauth] ca_file"
            : fmt::format("check DNS, the network, and that {} ([oauth] ca_file) holds the CA "
                          "of the endpoint's certificate",
                          config.oauth.ca_file.string()));
  }
  const bool tls = url.starts_with("https://");
  return ok(name, fmt::format("{} answered HTTP {}{}", url, response->status,
                              tls ? " over verified TLS" : " (plain HTTP on loopback)"));
}

struct UpstreamUse {
  bool oauth = false;  // some account logs in with XOAUTH2 there
  std::vector<std::string> accounts;
};

Check check_upstream(const Config& config, const std::string& host, int port,
                     const UpstreamUse& use, net::ssl::context* tls, const std::string& tls_error) {
  const std::string name = "upstream " + format_host_port(host, port);
  const std::string ca_fix =
      config.upstream.ca_file.empty()
          ? fmt::format(
                "when {} uses a private CA, set [upstream] ca_file to its CA certificate; "
                "otherwise update the system trust store (ca-certificates)",
                host)
          : fmt::format("make {} ([upstream] ca_file) hold the CA that issued {}'s certificate",
                        config.upstream.ca_file.string(), host);
  if (tls == nullptr) {
    return failed(name, tls_error, "fix [upstream] ca_file");
  }
  auto probe = std::make_shared<ImapProbe>();
  probe->host = host;
  probe->port = port;
  run_bounded(probe, *tls, config.upstream.timeout);
  if (!probe->done) {
    if (!probe->verify_error.empty()) {
      return failed(name, fmt::format("certificate verification failed: {}", probe->verify_error),
                    probe->verify_error.find("hostname") != std::string::npos ||
                            probe->verify_error.find("Hostname") != std::string::npos
                        ? fmt::format("the certificate is not valid for {}: check the host name "
                                      "([upstream] host or the account's upstream)",
                                      host)
                        : ca_fix);
    }
    return failed(
        name,
        fmt::format("{} {}: {}", probe->stage, format_host_port(host, port), probe->ec.message()),
        "check the host name, port, firewall and [upstream] timeout");
  }
  const bool xoauth2 = proxy::has_capability(probe->capabilities, "AUTH=XOAUTH2");
  const std::string facts = fmt::format("{} certificate verified for {}", probe->tls_version, host);
  if (xoauth2) {
    return ok(name, facts + ", advertises AUTH=XOAUTH2");
  }
  if (use.oauth) {
    return failed(name, facts + ", but it does not advertise AUTH=XOAUTH2",
                  "point OAuth accounts at a server that supports XOAUTH2 (its IMAP host)");
  }
  return warn(name, facts + ", no AUTH=XOAUTH2 (fine for its password accounts)");
}

// The submission upstream: connect, TLS as configured (certificate verified), EHLO; it must
// offer AUTH XOAUTH2 for OAuth accounts (issue #11).
Check check_smtp_upstream(const Config& config, const proxy::SmtpEndpoint& endpoint,
                          net::ssl::context* tls, const std::string& tls_error) {
  const std::string name = "smtp upstream " + format_host_port(endpoint.host, endpoint.port);
  if (tls == nullptr) {
    return failed(name, tls_error, "fix [upstream] ca_file");
  }
  net::io_context ioc;
  std::optional<std::expected<std::vector<proxy::smtp::Extension>, proxy::UpstreamError>> result;
  net::co_spawn(
      ioc, proxy::probe_smtp_upstream(*tls, endpoint, config.upstream.timeout),
      [&result](std::exception_ptr e,
                std::expected<std::vector<proxy::smtp::Extension>, proxy::UpstreamError> r) {
        if (!e) {
          result = std::move(r);
        }
      });
  ioc.run();
  const std::string mode(proxy::to_string(endpoint.tls));
  if (!result) {
    return failed(name, "internal error while probing", "run with --verbose and report it");
  }
  if (!*result) {
    return failed(name, result->error().detail,
                  fmt::format("check [upstream] smtp_host, smtp_port and smtp_tls (\"{}\" here), "
                              "the firewall, and ca_file when it uses a private CA",
                              mode));
  }
  const bool xoauth2 = proxy::smtp::offers_sasl_mechanism(**result, "XOAUTH2");
  const std::string facts = fmt::format("{} TLS certificate verified for {}", mode, endpoint.host);
  if (xoauth2) {
    return ok(name, facts + ", offers AUTH XOAUTH2");
  }
  return failed(name, facts + ", but it does not offer AUTH XOAUTH2",
                "point smtp_host at the provider's submission server (smtp.office365.com:587, "
                "smtp.gmail.com:465); for Exchange Online, enable SMTP AUTH for the mailbox");
}

Check check_server_certificate(const Config& config) {
  const auto& cert = config.server.certificate;
  const auto& key = config.server.private_key;
  const auto ca = certs::ca_certificate_path(cert);
  if (!fs::exists(cert) && !fs::exists(key)) {
    return warn("server certificate",
                fmt::format("{} not created yet; `serve` creates it, signed by {}", cert.string(),
                            ca.string()),
                "run `imap-oauth2-proxy init` to create it now");
  }
  auto info = certs::inspect_certificate(cert);
  if (!info) {
    return failed("server certificate", info.error().message,
                  fmt::format("replace {}, or remove it and {} and restart `serve`", cert.string(),
                              key.string()));
  }
  auto check = server_certificate_check(cert, {info->not_before, info->not_after}, ca,
                                        std::chrono::system_clock::now());
  if (check.status == CheckStatus::fail) {
    return check;
  }
  // The key must fit (and the chain load) exactly as `serve` will load them.
  if (auto ctx = certs::make_server_context(cert, key); !ctx) {
    return failed(
        "server certificate", ctx.error().message,
        fmt::format("put the key of {} in {} ([server] private_key)", cert.string(), key.string()));
  }
  return check;
}

Check check_listen(const std::string& what, const HostPort& listen, bool tls) {
  const std::string name = "listen " + format_host_port(listen.host, listen.port);
  error_code ec;
  const auto address = net::ip::make_address(listen.host, ec);
  if (ec) {
    return failed(name, fmt::format("\"{}\" is not an IP address", listen.host),
                  fmt::format("set [server] {} to an IP address", what));
  }
  {
    net::io_context ioc;
    tcp::acceptor acceptor(ioc);
    const tcp::endpoint endpoint(address, static_cast<unsigned short>(listen.port));
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) {
      // As the listener does, so a port in TIME_WAIT counts as free.
      acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
      acceptor.bind(endpoint, ec);
    }
    if (!ec) {
      return ok(name, fmt::format("free ({})", what));
    }
  }
  if (ec != net::error::address_in_use) {
    return failed(name, fmt::format("cannot listen: {}", ec.message()),
                  fmt::format("choose another [server] {} address or port", what));
  }
  // In use: by us? Connect where a client would (an unspecified address means loopback) and
  // look for our greeting. Certificates are not checked here: the certificate check does that.
  std::string host = listen.host;
  if (address.is_unspecified()) {
    host = address.is_v6() ? "::1" : "127.0.0.1";
  }
  net::ssl::context tls_ctx(net::ssl::context::tls_client);
  tls_ctx.set_verify_callback([](bool, net::ssl::verify_context&) { return true; });
  auto probe = std::make_shared<ImapProbe>();
  probe->host = host;
  probe->port = listen.port;
  probe->tls = tls;
  probe->capability = false;
  run_bounded(probe, tls_ctx, local_probe_timeout);
  if (probe->done && probe->greeting.find(our_greeting) != std::string::npos) {
    return ok(name, fmt::format("in use by a running imap-oauth2-proxy ({})", what));
  }
  return failed(name, fmt::format("in use by another program ({})", what),
                fmt::format("stop that program (`ss -ltnp 'sport = :{}'` names it) or change "
                            "[server] {}",
                            listen.port, what));
}

struct Used {
  // token endpoint URL -> label ("default", "microsoft (contoso.com)")
  std::map<std::string, std::string> endpoints;
  std::map<std::pair<std::string, int>, UpstreamUse> upstreams;
  std::vector<Check> problems;  // accounts whose provider cannot be resolved
};

Used used_by(const Config& config, const std::vector<storage::AccountSummary>& accounts) {
  Used used;
  // The default profile always counts: it is what a new account gets.
  if (auto profile = config.provider(auth::default_provider)) {
    used.endpoints.emplace(replace_tenant((*profile)->token_endpoint, (*profile)->tenant),
                           std::string(auth::default_provider));
  }
  if (accounts.empty()) {
    used.upstreams[{config.upstream.host, config.upstream.port}].oauth = true;
  }
  for (const auto& a : accounts) {
    std::pair<std::string, int> upstream{config.upstream.host, config.upstream.port};
    const std::string provider_name =
        a.provider.empty() ? std::string(auth::default_provider) : a.provider;
    if (a.use_oauth) {
      storage::Credentials row;
      row.email = a.email;
      row.provider = provider_name;
      row.tenant = a.tenant;
      row.client_id = a.client_id;
      auto resolved = account_provider(config, row);
      if (!resolved) {
        used.problems.push_back(failed("provider of " + a.email, resolved.error().message,
                                       "define the provider in the config, or `account add` "
                                       "the account again with another --provider"));
      } else {
        std::string label = resolved->name;
        if (!a.tenant.empty()) {
          label += " (" + a.tenant + ")";
        }
        used.endpoints.emplace(resolved->token_endpoint, label);
      }
    }
    if (!a.upstream_host.empty()) {
      upstream = {a.upstream_host, a.upstream_port > 0 ? a.upstream_port : 993};
    } else if (auto it = config.providers.find(provider_name); it != config.providers.end()) {
      upstream = {it->second.upstream_host, it->second.upstream_port};
    }
    auto& use = used.upstreams[upstream];
    use.oauth = use.oauth || a.use_oauth;
    use.accounts.push_back(a.email);
  }
  return used;
}

bool app_only(const Config& config, const storage::AccountSummary& a) {
  auto profile = config.provider(a.provider.empty() ? auth::default_provider : a.provider);
  return profile && (*profile)->flow == auth::Flow::app;
}

std::vector<Check> run_checks(const Options& opts) {
  std::vector<Check> checks;
  auto config = load_effective_config(opts.config);
  if (!config) {
    checks.push_back(failed("config", config.error().message,
                            "fix the file (imap-oauth2-proxy init --dir DIR writes a commented "
                            "example)"));
    return checks;
  }
  // Doctor reports what it finds itself; library warnings are noise here unless asked for.
  if (auto logging = setup_logging(opts.verbose ? config->log.level : "error", config->log.format);
      !logging) {
    checks.push_back(warn("logging", logging.error().message));
  }
  if (config->file.empty()) {
    checks.push_back(ok("config", fmt::format("no config file: built-in defaults, data in {}",
                                              config->base_dir.string())));
  } else {
    checks.push_back(ok("config", fmt::format("{} parses", config->file.string())));
    checks.push_back(check_config_mode(*config));
  }

  auto storage = check_storage(*config);
  checks.insert(checks.end(), storage.checks.begin(), storage.checks.end());
  std::vector<storage::AccountSummary> accounts;
  if (storage.store) {
    auto listed = storage.store->list();
    if (listed) {
      accounts = std::move(*listed);
    } else {
      checks.push_back(failed("accounts", listed.error().message,
                              "check the database file; restore it from a backup if damaged"));
    }
  }

  checks.push_back(check_redis(*config));

  auto used = used_by(*config, accounts);
  checks.insert(checks.end(), used.problems.begin(), used.problems.end());
  for (const auto& [url, label] : used.endpoints) {
    checks.push_back(check_token_endpoint(*config, label, url));
  }
  auto tls = certs::make_client_context(config->upstream.ca_file);
  const std::string tls_error = tls ? std::string{} : tls.error().message;
  for (const auto& [where, use] : used.upstreams) {
    checks.push_back(check_upstream(*config, where.first, where.second, use,
                                    tls ? tls->get() : nullptr, tls_error));
  }

  if (config->server.listen_submission || config->server.listen_submissions) {
    // Each SMTP upstream an account sends through: its provider's, else the default.
    const auto settings = proxy_settings(*config);
    std::map<std::tuple<std::string, int, proxy::SmtpTls>, proxy::SmtpEndpoint> smtp;
    auto add = [&smtp](const proxy::SmtpEndpoint& e) {
      smtp.emplace(std::tuple{e.host, e.port, e.tls}, e);
    };
    add(settings.default_smtp);
    for (const auto& a : accounts) {
      auth::LocalAuthOutcome who;
      who.provider = a.provider.empty() ? std::string(auth::default_provider) : a.provider;
      add(proxy::smtp_upstream_for(who, settings));
    }
    for (const auto& [key, endpoint] : smtp) {
      checks.push_back(
          check_smtp_upstream(*config, endpoint, tls ? tls->get() : nullptr, tls_error));
    }
  }

  checks.push_back(check_server_certificate(*config));
  if (config->server.listen_tls) {
    checks.push_back(check_listen("listen_tls", *config->server.listen_tls, true));
  }
  if (config->server.listen_starttls) {
    checks.push_back(check_listen("listen_starttls", *config->server.listen_starttls, false));
  }
  if (config->server.listen_submission) {
    checks.push_back(check_listen("listen_submission", *config->server.listen_submission, false));
  }
  if (config->server.listen_submissions) {
    checks.push_back(check_listen("listen_submissions", *config->server.listen_submissions, true));
  }

  const auto now = std::chrono::system_clock::now();
  for (const auto& a : accounts) {
    checks.push_back(account_check(a, app_only(*config, a), config->oauth.keepalive, now));
  }
  if (storage.store && accounts.empty()) {
    checks.push_back(warn("accounts", "none yet", "imap-oauth2-proxy account add EMAIL"));
  }
  return checks;
}

}  // namespace

int run_doctor(const Options& opts, const std::string& format) {
  const auto checks = run_checks(opts);
  if (format == "json") {
    std::cout << render_json(checks).dump(2) << "\n";
  } else {
    std::cout << render_text(checks);
  }
  std::cout << std::flush;
  return doctor_exit_code(checks);
}

}  // namespace iop::app
