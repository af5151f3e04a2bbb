#pragma once
// Provider profiles: how an account is authorized (issue #6). A profile names the OAuth client
// (endpoints, client id and secret, scope), the grant (`delegated`: a user signs in and a
// refresh token is kept; `app`: client credentials, no user) and the upstream IMAP server.
// Accounts store a profile name plus their own tenant and client id; resolve_provider() turns
// the two into the settings one account uses. Pure: no I/O.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

enum class Flow { delegated, app };
std::string_view to_string(Flow flow);
std::optional<Flow> parse_flow(std::string_view text);

// The profile the [oauth] and [upstream] sections form; accounts without a provider use it.
inline constexpr std::string_view default_provider = "default";

struct ProviderProfile {
  std::string name;
  Flow flow = Flow::delegated;
  std::string tenant = "common";  // replaces "{tenant}" in the endpoint URLs
  std::string token_endpoint;
  std::string authorize_endpoint;  // empty: no browser flow
  std::string device_endpoint;     // empty: no device-code flow
  std::string client_id;
  Secret client_secret;
  std::string scope;  // what refreshes (and client-credentials grants) ask for
  // Added to the scope of an interactive authorization so that the account may also send mail
  // through the submission listener (issue #11). Refreshes keep asking `scope` only: asking for
  // a scope an older account never consented to fails the refresh (AADSTS65001), while
  // Microsoft's access tokens carry every scope consented for the resource, so a token refreshed
  // with `scope` still holds SMTP.Send once the user has consented to it.
  std::string send_scope;
  // Added to the scope of an interactive authorization so the answer carries an id_token
  // naming who signed in (OpenID Connect Core §5.4).
  std::string identity_scope = "openid profile email";
  // Extra authorize-request parameters (Google needs access_type=offline to issue a refresh
  // token at all, and prompt=consent to issue one again).
  std::vector<std::pair<std::string, std::string>> authorize_params;
  std::string upstream_host;
  int upstream_port = 993;
  // Submission (issue #11): the SMTP server, its port, and how TLS starts there: "starttls",
  // "implicit", or "" for the port's convention (465 implicit, others STARTTLS; RFC 8314 §3.3).
  std::string smtp_host;
  int smtp_port = 587;
  std::string smtp_tls;
};

// The built-in profiles: microsoft, microsoft-app, google (ARCHITECTURE.md, issue #6).
const std::map<std::string, ProviderProfile, std::less<>>& builtin_profiles();

// One account's settings: the profile with the account's tenant and client id applied and
// "{tenant}" replaced in every endpoint.
struct ResolvedProvider {
  std::string name;
  Flow flow = Flow::delegated;
  std::string tenant;
  std::string token_endpoint;
  std::string authorize_endpoint;
  std::string device_endpoint;
  std::string client_id;
  Secret client_secret;
  std::string scope;
  std::string send_scope;
  std::string identity_scope;
  std::vector<std::pair<std::string, std::string>> authorize_params;
  std::string upstream_host;
  int upstream_port = 993;

  // scope + send_scope + identity_scope, for interactive authorization requests.
  [[nodiscard]] std::string authorization_scope() const;
};

// Applies `tenant` and `client_id` (empty: the profile's own) to `profile`. Errors
// (Errc::config_error, naming the key or flag to fix): a tenant that is not a GUID, a domain or
// common/organizations/consumers; a tenant given for a profile whose endpoints have no
// "{tenant}"; no client id at all.
Result<ResolvedProvider> resolve_provider(const ProviderProfile& profile, std::string_view tenant,
                                          std::string_view client_id);

// Whether `tenant` can stand in a Microsoft endpoint path: letters, digits, '.', '-' (a tenant
// id GUID, a verified domain, or common / organizations / consumers), 1 to 256 characters.
bool valid_tenant(std::string_view tenant);

}  // namespace iop::auth
