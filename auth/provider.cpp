#include "auth/provider.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "common/ascii.hpp"

namespace iop::auth {

namespace {

constexpr std::string_view microsoft_base =
    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/";

std::string replace_tenant(std::string url, std::string_view tenant) {
  constexpr std::string_view placeholder = "{tenant}";
  for (auto at = url.find(placeholder); at != std::string::npos;
       at = url.find(placeholder, at + tenant.size())) {
    url.replace(at, placeholder.size(), tenant);
  }
  return url;
}

bool has_placeholder(const ProviderProfile& p) {
  constexpr std::string_view placeholder = "{tenant}";
  return p.token_endpoint.find(placeholder) != std::string::npos ||
         p.authorize_endpoint.find(placeholder) != std::string::npos ||
         p.device_endpoint.find(placeholder) != std::string::npos;
}

std::map<std::string, ProviderProfile, std::less<>> make_builtins() {
  std::map<std::string, ProviderProfile, std::less<>> out;

  ProviderProfile microsoft;
  microsoft.name = "microsoft";
  microsoft.flow = Flow::delegated;
  microsoft.tenant = "common";
  microsoft.token_endpoint = fmt::format("{}token", microsoft_base);
  microsoft.authorize_endpoint = fmt::format("{}authorize", microsoft_base);
  microsoft.device_endpoint = fmt::format("{}devicecode", microsoft_base);
  microsoft.scope = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
  microsoft.send_scope = "https://outlook.office.com/SMTP.Send";
  microsoft.upstream_host = "outlook.office365.com";
  microsoft.upstream_port = 993;
  // Exchange Online SMTP AUTH client submission: STARTTLS on 587.
  microsoft.smtp_host = "smtp.office365.com";
  microsoft.smtp_port = 587;
  microsoft.smtp_tls = "starttls";
  out.emplace(microsoft.name, microsoft);

  // Client credentials (Office 365 IMAP.AccessAsApp): ".default" asks for every application
  // permission granted to the app; there is no user, so no identity scope and no
  // interactive endpoints. Client-credentials requests need a real tenant, not "common".
  ProviderProfile app = microsoft;
  app.name = "microsoft-app";
  app.flow = Flow::app;
  app.tenant = "";
  app.authorize_endpoint.clear();
  app.device_endpoint.clear();
  app.scope = "https://outlook.office365.com/.default";
  app.send_scope.clear();  // .default covers every permission granted to the app
  app.identity_scope.clear();
  out.emplace(app.name, app);

  // Google issues a refresh token only with access_type=offline, and a second time only with
  // prompt=consent. Its device flow does not allow the mail scope, so there is none here.
  ProviderProfile google;
  google.name = "google";
  google.flow = Flow::delegated;
  google.tenant.clear();
  google.token_endpoint = "https://oauth2.googleapis.com/token";
  google.authorize_endpoint = "https://accounts.google.com/o/oauth2/v2/auth";
  google.scope = "https://mail.google.com/";  // IMAP and SMTP alike
  google.send_scope.clear();
  google.identity_scope = "openid email";
  google.authorize_params = {{"access_type", "offline"}, {"prompt", "consent"}};
  google.upstream_host = "imap.gmail.com";
  google.upstream_port = 993;
  // https://mail.google.com/ covers SMTP as well as IMAP.
  google.smtp_host = "smtp.gmail.com";
  google.smtp_port = 465;
  google.smtp_tls = "implicit";
  out.emplace(google.name, google);
  return out;
}

}  // namespace

std::string_view to_string(Flow flow) { return flow == Flow::app ? "app" : "delegated"; }

std::optional<Flow> parse_flow(std::string_view text) {
  if (text == "delegated") {
    return Flow::delegated;
  }
  if (text == "app") {
    return Flow::app;
  }
  return std::nullopt;
}

const std::map<std::string, ProviderProfile, std::less<>>& builtin_profiles() {
  static const auto profiles = make_builtins();
  return profiles;
}

bool valid_tenant(std::string_view tenant) {
  return !tenant.empty() && tenant.size() <= 256 &&
         std::all_of(tenant.begin(), tenant.end(),
                     [](char c) { return is_ascii_alnum(c) || c == '.' || c == '-'; });
}

std::string ResolvedProvider::authorization_scope() const {
  std::string out;
  for (const auto* part : {&scope, &send_scope, &identity_scope}) {
    if (!part->empty()) {
      out += out.empty() ? *part : " " + *part;
    }
  }
  return out;
}

Result<ResolvedProvider> resolve_provider(const ProviderProfile& profile, std::string_view tenant,
                                          std::string_view client_id) {
  const bool placeholder = has_placeholder(profile);
  if (!tenant.empty() && !placeholder) {
    return fail(Errc::config_error,
                fmt::format("--tenant: the endpoints of provider '{}' have no {{tenant}} "
                            "placeholder; use a provider that has one (e.g. --provider microsoft)",
                            profile.name));
  }
  ResolvedProvider r;
  r.name = profile.name;
  r.flow = profile.flow;
  r.tenant = tenant.empty() ? profile.tenant : std::string(tenant);
  if (placeholder && !valid_tenant(r.tenant)) {
    return fail(Errc::config_error,
                r.tenant.empty()
                    ? fmt::format("provider '{}' needs a tenant: give --tenant (your directory's "
                                  "domain or tenant id) or set [providers.{}] tenant",
                                  profile.name, profile.name)
                    : fmt::format("tenant '{}' is not a tenant id, a domain, common, "
                                  "organizations or consumers",
                                  r.tenant));
  }
  if (r.flow == Flow::app && placeholder &&
      (r.tenant == "common" || r.tenant == "organizations" || r.tenant == "consumers")) {
    return fail(Errc::config_error,
                fmt::format("provider '{}' uses client credentials, which need your own tenant "
                            "(its domain or id), not '{}': give --tenant",
                            profile.name, r.tenant));
  }
  r.token_endpoint = replace_tenant(profile.token_endpoint, r.tenant);
  r.authorize_endpoint = replace_tenant(profile.authorize_endpoint, r.tenant);
  r.device_endpoint = replace_tenant(profile.device_endpoint, r.tenant);
  r.client_id = client_id.empty() ? profile.client_id : std::string(client_id);
  if (r.client_id.empty()) {
    return fail(Errc::config_error,
                profile.name == default_provider
                    ? std::string("no client id: set [oauth] client_id to your app "
                                  "registration's Application (client) ID, or give --client-id")
                    : fmt::format("provider '{}' has no client id: set [providers.{}] client_id "
                                  "to your app registration's Application (client) ID, or give "
                                  "--client-id",
                                  profile.name, profile.name));
  }
  r.client_secret = profile.client_secret;
  r.scope = profile.scope;
  r.send_scope = profile.send_scope;
  r.identity_scope = profile.identity_scope;
  r.authorize_params = profile.authorize_params;
  r.upstream_host = profile.upstream_host;
  r.upstream_port = profile.upstream_port;
  return r;
}

}  // namespace iop::auth
