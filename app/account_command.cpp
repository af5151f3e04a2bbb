#include "app/account_command.hpp"

#include <fstream>
#include <iostream>
#include <sstream>

#include "app/oauth_flows.hpp"
#include "auth/aadsts.hpp"
#include "auth/client_assertion.hpp"
#include "auth/id_token.hpp"
#include "auth/password_hash.hpp"
#include "auth/pkce.hpp"
#include "common/clock.hpp"
#include "common/duration.hpp"
#include "common/host_port.hpp"

namespace iop::app {

namespace {

enum class FlowKind { browser, paste, device_code, client_credentials, refresh_token, password };

std::string_view flag_of(FlowKind kind) {
  switch (kind) {
    case FlowKind::browser:
      return "--browser";
    case FlowKind::paste:
      return "--paste";
    case FlowKind::device_code:
      return "--device-code";
    case FlowKind::client_credentials:
      return "--client-credentials";
    case FlowKind::refresh_token:
      return "--refresh-token-stdin";
    case FlowKind::password:
      return "--password-stdin";
  }
  return "";
}

// The flow the flags ask for; with none, the provider's kind decides (app-only: client
// credentials), then a terminal asks, preferring the browser when a desktop is there.
FlowKind choose_flow(const AuthorizeFlags& f, auth::Flow provider_flow) {
  std::vector<FlowKind> given;
  if (f.browser) given.push_back(FlowKind::browser);
  if (f.paste) given.push_back(FlowKind::paste);
  if (f.device_code) given.push_back(FlowKind::device_code);
  if (f.client_credentials) given.push_back(FlowKind::client_credentials);
  if (f.refresh_token_stdin) given.push_back(FlowKind::refresh_token);
  if (f.password_stdin) given.push_back(FlowKind::password);
  if (given.size() > 1) {
    die(fmt::format("give one flow, not {} and {}", flag_of(given[0]), flag_of(given[1])));
  }
  if (given.size() == 1) {
    return given[0];
  }
  if (provider_flow == auth::Flow::app) {
    return FlowKind::client_credentials;
  }
  if (!stdin_is_tty()) {
    die("say how to authorize: --browser, --paste (no browser on this machine), --device-code, "
        "--client-credentials (app-only), --refresh-token-stdin or --password-stdin");
  }
  const bool desktop = desktop_available();
  std::cerr << "How do you want to sign in?\n"
            << "  1) in a browser on this machine" << (desktop ? " (default)" : "") << "\n"
            << "  2) with a code on another device (phone, laptop)" << (desktop ? "" : " (default)")
            << "\n"
            << "  3) in a browser elsewhere, pasting the address it ends on back here\n"
            << "choice [" << (desktop ? 1 : 2) << "]: " << std::flush;
  std::string answer;
  std::getline(std::cin, answer);
  if (answer == "1") return FlowKind::browser;
  if (answer == "2") return FlowKind::device_code;
  if (answer == "3") return FlowKind::paste;
  if (answer.empty()) return desktop ? FlowKind::browser : FlowKind::device_code;
  die(fmt::format("'{}' is not one of 1, 2, 3", answer));
}

// Who `id_token` names when that is not `expected`; nullopt when it is. Dies, saying `unknown`
// ("cannot tell who signed in"), when the token cannot be read.
std::optional<std::string> other_identity(const std::string& id_token, const std::string& expected,
                                          std::string_view unknown) {
  auto claims = auth::decode_id_token(id_token);
  if (!claims) {
    die(fmt::format("{}, nothing was stored: {}", unknown, claims.error().message));
  }
  if (auth::identity_matches(*claims, expected)) {
    return std::nullopt;
  }
  const auto who = auth::identity_candidates(*claims);
  return who.empty() ? std::string("an account without an address") : who.front();
}

// An imported refresh token must be the account's own (or --signed-in-as's). The check needed a
// refresh: with an endpoint that rotates refresh tokens, the one given may be spent now.
void check_imported_identity(const auth::TokenGrant& grant, const std::string& expected,
                             const std::string& email, const Secret& given) {
  const auto owner =
      other_identity(*grant.id_token, expected, "cannot tell whose refresh token this is");
  if (!owner) {
    return;
  }
  const std::string spent =
      grant.refresh_token && !(*grant.refresh_token == given)
          ? " Checking it replaced it with a new one: an endpoint that revokes replaced tokens "
            "no longer accepts the one given."
          : "";
  if (expected != email) {
    die(
        fmt::format("the refresh token is {}'s, not {}'s as --signed-in-as says; nothing was "
                    "stored.{}",
                    *owner, expected, spent));
  }
  die(
      fmt::format("the refresh token is {}'s, not {}'s; nothing was stored. Give {}'s own "
                  "refresh token, or if {} is a shared mailbox that {} may open, add "
                  "--signed-in-as {}.{}",
                  *owner, email, email, email, *owner, *owner, spent));
}

// The signed-in identity must be the account (or --signed-in-as for a shared mailbox).
void check_identity(const auth::TokenGrant& grant, const std::string& expected,
                    const std::string& email) {
  if (!grant.id_token) {
    die(
        fmt::format("the token endpoint did not say who signed in (no id_token); nothing was "
                    "stored. The provider's scope must allow 'openid' (check its "
                    "identity_scope and the app registration's API permissions)"));
  }
  const auto other = other_identity(*grant.id_token, expected, "cannot tell who signed in");
  if (!other) {
    return;
  }
  const std::string& signed_in = *other;
  if (expected != email) {
    die(
        fmt::format("signed in as {}, not {} as --signed-in-as says; nothing was stored. Sign "
                    "in as {} (a private browser window avoids a remembered session)",
                    signed_in, expected, expected));
  }
  die(
      fmt::format("signed in as {}, not {}; nothing was stored. Sign in as {} (use a private "
                  "browser window, or sign out of {} first), or if {} is a shared mailbox that "
                  "{} may open, add --signed-in-as {}",
                  signed_in, email, email, signed_in, email, signed_in, signed_in));
}

Secret generated_password() {
  // 24 characters of base64url from the random generator (144 bits): strong enough that rate
  // limits are not what protects it.
  const auto random = auth::make_state();
  return Secret(random.substr(0, 24));
}

// The local password to set: its hash, and the password itself when it was generated (shown
// once the account is stored: shown before, a failed sign-in would leave the user holding a
// password that was never set).
struct LocalPassword {
  std::string hash;
  Secret generated;
};

std::optional<LocalPassword> local_password_hash(const AuthorizeFlags& f, bool existing) {
  if (f.local_password_stdin && f.generate_local_password) {
    die("give --local-password-stdin or --generate-local-password, not both");
  }
  if (f.generate_local_password) {
    auto password = generated_password();
    auto hash = check(auth::hash_password(password));
    return LocalPassword{std::move(hash), std::move(password)};
  }
  if (f.local_password_stdin) {
    return LocalPassword{check(auth::hash_password(read_secret_line("local password"))), {}};
  }
  if (!existing && stdin_is_tty()) {
    auto password = read_secret_line("local password for mail clients");
    if (password.empty()) {
      die("the local password is empty; nothing was stored");
    }
    if (!(read_secret_line("repeat it") == password)) {
      die("the two passwords differ; nothing was stored");
    }
    return LocalPassword{check(auth::hash_password(password)), {}};
  }
  return std::nullopt;
}

std::pair<std::string, int> parse_upstream(const std::string& upstream) {
  auto parsed = parse_host_port(upstream);
  if (!parsed) {
    die("--upstream: " + parsed.error().message);
  }
  return {std::move(parsed->host), parsed->port};
}

}  // namespace

void add_authorize_flags(CLI::App* cmd, AuthorizeFlags& f) {
  cmd->add_option("EMAIL", f.email, "the account's email address")->required();
  cmd->add_flag("--browser", f.browser, "sign in with a browser on this machine (code + PKCE)");
  cmd->add_flag("--paste", f.paste,
                "sign in with a browser anywhere, then paste the address it ends on");
  cmd->add_flag("--device-code", f.device_code, "sign in on another device with a code");
  cmd->add_flag("--client-credentials", f.client_credentials,
                "app-only access (client secret or certificate), no user sign-in");
  cmd->add_flag("--refresh-token-stdin", f.refresh_token_stdin,
                "import a refresh token read from stdin (proven by one refresh first)");
  cmd->add_flag("--password-stdin", f.password_stdin,
                "an upstream account that still uses a password, read from stdin");
  cmd->add_option("--provider", f.provider,
                  "provider profile: default ([oauth]), microsoft, microsoft-app, google, or a "
                  "[providers.NAME]");
  cmd->add_option("--tenant", f.tenant,
                  "directory: a tenant id, a domain, common, "
                  "organizations or consumers");
  cmd->add_option("--client-id", f.client_id, "this account's own application (client) id");
  cmd->add_flag("--client-secret-stdin", f.client_secret_stdin,
                "read the client secret of an app-only account from stdin");
  cmd->add_option("--client-certificate", f.client_certificate,
                  "PEM file with the certificate and private key of an app-only account");
  cmd->add_option("--signed-in-as", f.signed_in_as,
                  "for a shared mailbox: the user who signs in and may open it");
  cmd->add_flag("--local-password-stdin", f.local_password_stdin,
                "also read the local (mail client) password from the next stdin line");
  cmd->add_flag("--generate-local-password", f.generate_local_password,
                "generate a strong local password and print it once");
  cmd->add_option("--upstream", f.upstream, "host:port of this account's IMAP server");
  cmd->add_option("--timeout", f.timeout, "how long to wait for a browser sign-in (default 5m)");
}

int run_account_authorize(const AuthorizeFlags& f, bool reauth, const Options& opts) {
  const auto email = normalized(f.email);
  const auto timeout = parse_duration(f.timeout);
  if (!timeout || timeout->count() <= 0) {
    die(fmt::format("--timeout: expected a duration like \"5m\", got \"{}\"", f.timeout));
  }
  std::string signed_in_as;
  if (!f.signed_in_as.empty()) {
    signed_in_as = normalized(f.signed_in_as);
  }
  auto services = open_services(opts);
  const auto& config = services->config;

  // An existing account keeps its provider settings, upstream, owner and local password
  // unless a flag says otherwise. list() reads no secret, so even an account whose secrets no
  // longer decrypt can be authorized again.
  std::optional<storage::AccountSummary> existing;
  for (auto& a : check(services->store->list())) {
    if (a.email == email) {
      existing = std::move(a);
    }
  }
  if (reauth && !existing) {
    die(fmt::format("no account {}; add it with 'imap-oauth2-proxy account add {}'", email, email));
  }

  storage::Credentials row;
  row.email = email;
  // A row that fails its MAC (edited behind the store's back) gives nothing to keep: its
  // upstream or provider may be an attacker's, and writing them again would bless them.
  if (existing && existing->verified) {
    row.provider = existing->provider;
    row.tenant = existing->tenant;
    row.client_id = existing->client_id;
    row.signed_in_as = existing->signed_in_as;
    row.upstream_host = existing->upstream_host;
    row.upstream_port = existing->upstream_port;
  }
  if (!f.provider.empty()) {
    check(config.provider(f.provider));
    if (existing && f.provider != existing->provider) {
      // Another provider: the old tenant and client id belong to the old one.
      row.tenant.clear();
      row.client_id.clear();
    }
    row.provider = f.provider;
  } else if (!existing && f.client_credentials) {
    row.provider = "microsoft-app";
  }
  if (!f.tenant.empty()) row.tenant = f.tenant;
  if (!f.client_id.empty()) row.client_id = f.client_id;
  if (!signed_in_as.empty()) row.signed_in_as = signed_in_as == email ? "" : signed_in_as;
  if (!f.upstream.empty()) {
    std::tie(row.upstream_host, row.upstream_port) = parse_upstream(f.upstream);
  }

  const auto* profile = check(config.provider(row.provider));
  const FlowKind flow = choose_flow(f, profile->flow);
  // Every input is read before any flow runs: a flow may spend a refresh token or an
  // authorization code, and what it returns must not be lost to a mistyped password after.
  std::optional<LocalPassword> hash;
  if (flow == FlowKind::password) {
    if (!f.provider.empty() || !f.tenant.empty() || !f.client_id.empty() ||
        !f.signed_in_as.empty()) {
      die("--provider, --tenant, --client-id and --signed-in-as are for OAuth sign-ins, not "
          "--password-stdin");
    }
    if (existing && existing->use_oauth) {
      // Irreversible: the refresh token would be deleted with the switch.
      die(fmt::format(
          "{} signs in with OAuth: --password-stdin would delete its refresh token. To make it "
          "a password account, remove it ('imap-oauth2-proxy account remove {}') and add it "
          "again with --password-stdin",
          email, email));
    }
    row.use_oauth = false;
    row.provider = std::string(auth::default_provider);
    row.tenant.clear();
    row.client_id.clear();
    row.signed_in_as.clear();
    row.password = read_secret_line("upstream password");
    if (row.password.empty()) {
      die("the upstream password is empty");
    }
    hash = local_password_hash(f, existing.has_value());
  } else {
    row.use_oauth = true;
    if (flow == FlowKind::client_credentials) {
      if (profile->flow != auth::Flow::app) {
        die(
            fmt::format("--client-credentials needs an app-only provider (flow = \"app\"), and "
                        "'{}' is delegated: use --provider microsoft-app",
                        row.provider));
      }
      if (f.client_secret_stdin && !f.client_certificate.empty()) {
        die("give --client-secret-stdin or --client-certificate, not both");
      }
      if (f.client_secret_stdin) {
        row.client_secret = read_secret_line("client secret");
        if (row.client_secret.empty()) {
          die("the client secret is empty");
        }
      } else if (!f.client_certificate.empty()) {
        row.client_certificate = read_secret_file(f.client_certificate, "--client-certificate");
        check(auth::load_client_certificate(row.client_certificate, f.client_certificate));
      } else if (existing) {
        // Re-authorizing keeps the credential it has, when it still decrypts.
        if (auto old = services->store->get(email)) {
          row.client_secret = old->client_secret;
          row.client_certificate = old->client_certificate;
        }
      }
      if (row.client_secret.empty() && row.client_certificate.empty() &&
          profile->client_secret.empty()) {
        die(
            fmt::format("an app-only account needs a credential: --client-certificate FILE "
                        "(recommended) or --client-secret-stdin, or [providers.{}] client_secret",
                        row.provider));
      }
    } else if (profile->flow == auth::Flow::app) {
      die(fmt::format("provider '{}' is app-only: use --client-credentials", row.provider));
    }
    if (flow != FlowKind::client_credentials &&
        (f.client_secret_stdin || !f.client_certificate.empty())) {
      die("--client-secret-stdin and --client-certificate are for --client-credentials");
    }
    if (flow == FlowKind::client_credentials) {
      if (!f.signed_in_as.empty()) {
        die("--signed-in-as is for a sign-in by a user; --client-credentials has none");
      }
      row.signed_in_as.clear();  // nobody signs in
    }

    const auto provider = check(account_provider(config, row));
    const auto client = check(account_client(config, row));
    const std::string expected = row.signed_in_as.empty() ? email : row.signed_in_as;
    Secret imported;
    if (flow == FlowKind::refresh_token) {
      imported = read_secret_line("refresh token");
    }
    hash = local_password_hash(f, existing.has_value());
    FlowContext ctx{provider, client.client, *services->endpoint, expected, *timeout};
    Result<auth::TokenGrant> grant = fail(Errc::internal, "no flow ran");
    {
      InterruptGuard guard;
      switch (flow) {
        case FlowKind::browser:
          grant = run_browser_flow(ctx);
          break;
        case FlowKind::paste:
          grant = run_paste_flow(ctx);
          break;
        case FlowKind::device_code:
          grant = run_device_flow(ctx);
          break;
        case FlowKind::client_credentials:
          grant = run_client_credentials_flow(ctx);
          break;
        case FlowKind::refresh_token:
          grant = run_refresh_token_import(ctx, imported);
          if (grant && !grant->refresh_token) {
            grant->refresh_token = imported;  // not rotated: the imported one stays valid
          }
          break;
        case FlowKind::password:
          break;
      }
      if (InterruptGuard::interrupted()) {
        die_cancelled();
      }
    }
    if (!grant) {
      // Advice naming "account reauth EMAIL" becomes the command for this account.
      die(auth::name_account(grant.error().message, email, existing ? "reauth" : "add"));
    }
    const bool interactive =
        flow == FlowKind::browser || flow == FlowKind::paste || flow == FlowKind::device_code;
    if (flow == FlowKind::refresh_token) {
      // Whose token it is, when the endpoint says (run_refresh_token_import asks): another
      // user's would replace a working token and log in as someone else.
      if (grant->id_token) {
        check_imported_identity(*grant, expected, email, imported);
      } else {
        std::cerr << fmt::format(
            "warning: the token endpoint did not say whose refresh token this is (no id_token "
            "for the scope '{}'): make sure it was issued to {}\n",
            provider.identity_scope, expected);
      }
    }
    if (interactive) {
      check_identity(*grant, expected, email);
      if (!grant->refresh_token) {
        die("the token endpoint issued no refresh token, nothing was stored: the scope must "
            "include offline_access (Microsoft) or the request access_type=offline (Google)");
      }
    }
    const auto now = std::chrono::system_clock::now();
    row.access_token = grant->access_token;
    row.token_expiry = to_unix_seconds(now) + grant->expires_in.count();
    if (grant->refresh_token) {
      row.refresh_token = *grant->refresh_token;
    }
    row.refreshed_at_ms = to_unix_millis(now);
  }

  auto& tokens = *services->tokens;
  check(
      auth::run_blocking<Result<void>>([&tokens, &row] { return tokens.save_authorization(row); }));
  if (hash) {
    check(services->store->set_local_password_hash(email, hash->hash));
  }
  record_event(
      *services, existing ? storage::AuditEvent::reauthorized : storage::AuditEvent::account_added,
      email,
      row.use_oauth ? fmt::format("provider {}", row.provider) : std::string("password upstream"));

  const std::string verb = existing ? "re-authorized" : "added";
  if (!row.use_oauth) {
    std::cout << verb << " " << email << " (password upstream)\n";
  } else {
    const auto provider = check(account_provider(config, row));
    std::cout << verb << " " << email << " (provider " << provider.name << ", "
              << auth::to_string(provider.flow)
              << (row.signed_in_as.empty() ? std::string() : ", signed in as " + row.signed_in_as)
              << "): access token valid until " << format_time(row.token_expiry) << "\n";
  }
  if (hash && !hash->generated.empty()) {
    // Shown once, on the terminal only; never stored in clear.
    std::cout << "local password (shown once; mail clients use it with the account's address): "
              << hash->generated.reveal() << "\n";
  }
  if (!hash && !(existing && existing->has_local_password)) {
    std::cout << "set the password mail clients will use with: imap-oauth2-proxy account passwd "
              << email << "\n";
  }
  return 0;
}

}  // namespace iop::app
