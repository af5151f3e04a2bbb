#include "auth/aadsts.hpp"

#include <algorithm>
#include <array>

namespace iop::auth {

namespace {

// Codes and meanings follow Microsoft's "Microsoft Entra authentication and authorization error
// codes" page (learn.microsoft.com/entra/identity-platform/reference-error-codes). Only codes a
// refresh-token grant or an interactive sign-in (authorization code, device code; issue #6) can
// plausibly produce are listed; for anything else the OAuth "error" member decides. The
// explanations are shown to operators, so each one says what to do.
struct Entry {
  int code;
  bool permanent;
  bool config;
  std::string_view explanation;
};

constexpr bool P = true;   // permanent
constexpr bool C = true;   // config
constexpr bool N = false;  // not permanent, not config

// Sorted by code, for the binary search in lookup_aadsts.
constexpr std::array table{
    Entry{50011, N, C,
          "the redirect URI is not registered for this application; in the app registration add "
          "http://localhost as a 'Mobile and desktop applications' redirect URI (or check "
          "[oauth] client_id)"},
    Entry{50020, N, C,
          "the account that signed in belongs to another tenant than the application accepts; "
          "sign in with the right account, or set the account's tenant (--tenant, [oauth] "
          "tenant)"},
    Entry{50034, P, N,
          "the user account does not exist in the tenant any more; check the address, then run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{50053, N, N,
          "Microsoft temporarily locked the sign-in (too many attempts or a blocked IP address); "
          "it clears by itself, the refresh will be retried later"},
    Entry{50055, P, N,
          "the user's password has expired; the user must change it, then run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{50057, P, N,
          "the user account is disabled in the tenant; an administrator must enable it, then run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{50058, P, N,
          "Microsoft needs an interactive sign-in (no usable session); run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{
        50076, P, N,
        "the tenant now requires multi-factor authentication for this sign-in; run "
        "'imap-oauth2-proxy account reauth EMAIL' and complete MFA to authorize the account again"},
    Entry{50079, P, N,
          "the user must register for multi-factor authentication; after registering, run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{50126, P, N,
          "Microsoft rejected the user's credentials; run 'imap-oauth2-proxy account reauth EMAIL' "
          "to authorize the account again"},
    Entry{50158, P, N,
          "an external security challenge was not satisfied; run 'imap-oauth2-proxy account reauth "
          "EMAIL' and complete it to authorize the account again"},
    Entry{50173, P, N,
          "the grant was revoked, usually because the user changed or reset the password; run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{50196, N, N,
          "Microsoft detected a request loop from this client and refused the request for now; "
          "the refresh will be retried later"},
    Entry{53000, P, N,
          "a conditional access policy requires a compliant device; an administrator must adjust "
          "the policy, then run 'imap-oauth2-proxy account reauth EMAIL'"},
    Entry{53003, P, N,
          "a conditional access policy blocked the sign-in; an administrator must allow this "
          "application, then run 'imap-oauth2-proxy account reauth EMAIL'"},
    Entry{
        54005, P, N,
        "the authorization code was already redeemed; run 'imap-oauth2-proxy account reauth EMAIL' "
        "to start the authorization again"},
    Entry{65001, P, N,
          "the user or an administrator has not consented to this application's IMAP permission; "
          "grant consent, then run 'imap-oauth2-proxy account reauth EMAIL'"},
    Entry{65004, P, N,
          "the user declined to consent to this application; run 'imap-oauth2-proxy account reauth "
          "EMAIL' and accept the consent prompt"},
    Entry{70000, P, N,
          "the refresh token is invalid, malformed or was issued for other scopes; run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{70008, P, N,
          "the refresh token has expired or was revoked; run 'imap-oauth2-proxy account reauth "
          "EMAIL' to authorize the account again"},
    Entry{70011, N, C,
          "the requested scope is invalid; check [oauth] scope (it should be "
          "'https://outlook.office.com/IMAP.AccessAsUser.All offline_access')"},
    Entry{70043, P, N,
          "a conditional access sign-in frequency policy requires the user to sign in again; run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
    Entry{90002, N, C,
          "the tenant in the token endpoint URL does not exist; check [oauth] token_endpoint"},
    Entry{90033, N, N,
          "Microsoft's directory service is temporarily unavailable; the refresh will be retried "
          "later"},
    Entry{90094, P, N,
          "an administrator must consent to this application's permissions for the tenant; after "
          "admin consent, run 'imap-oauth2-proxy account reauth EMAIL'"},
    Entry{500011, N, C,
          "the resource in the requested scope is not available in the tenant (is Exchange "
          "Online licensed?); check [oauth] scope"},
    Entry{500121, P, N,
          "the multi-factor authentication step failed; run 'imap-oauth2-proxy account reauth "
          "EMAIL' to authorize the account again"},
    Entry{700016, N, C,
          "the application (client id) is not registered in the tenant; check [oauth] client_id "
          "and token_endpoint"},
    Entry{700082, P, N,
          "the refresh token expired after 90 days without use; run 'imap-oauth2-proxy account "
          "reauth EMAIL' to authorize the account again"},
    Entry{700084, P, N,
          "the refresh token was issued to a single-page application and lives only 24 hours; "
          "register the application as a public or confidential client, then run "
          "'imap-oauth2-proxy account reauth EMAIL'"},
    Entry{7000215, N, C,
          "the client secret is wrong; check [oauth] client_secret (use the secret's value, not "
          "its id)"},
    Entry{7000218, N, C,
          "the application requires a client secret but none was sent; set [oauth] "
          "client_secret, or allow public client flows in the app registration"},
    Entry{7000222, N, C,
          "the client secret has expired; create a new secret in the app registration and set "
          "[oauth] client_secret"},
    Entry{9002313, P, N,
          "the refresh token is malformed or not valid for this request; run "
          "'imap-oauth2-proxy account reauth EMAIL' to authorize the account again"},
};

static_assert(std::is_sorted(table.begin(), table.end(),
                             [](const Entry& a, const Entry& b) { return a.code < b.code; }));
static_assert(std::none_of(table.begin(), table.end(),
                           [](const Entry& e) { return e.permanent && e.config; }));

}  // namespace

std::optional<AadstsInfo> lookup_aadsts(int code) {
  const auto it = std::lower_bound(table.begin(), table.end(), code,
                                   [](const Entry& e, int c) { return e.code < c; });
  if (it == table.end() || it->code != code) {
    return std::nullopt;
  }
  return AadstsInfo{it->code, it->permanent, it->config, it->explanation};
}

int extract_aadsts(std::string_view description) {
  constexpr std::string_view prefix = "AADSTS";
  // Codes are at most 7 digits today; 9 keeps the value inside int with room to spare.
  constexpr std::size_t max_digits = 9;
  std::size_t pos = 0;
  while ((pos = description.find(prefix, pos)) != std::string_view::npos) {
    pos += prefix.size();
    int code = 0;
    std::size_t digits = 0;
    while (pos + digits < description.size() && digits < max_digits) {
      const char c = description[pos + digits];
      if (c < '0' || c > '9') {
        break;
      }
      code = code * 10 + (c - '0');
      ++digits;
    }
    if (digits > 0) {
      return code;
    }
  }
  return 0;
}

std::string name_account(std::string_view text, std::string_view email, std::string_view command) {
  constexpr std::string_view placeholder = "account reauth EMAIL";
  const std::string concrete = "account " + std::string(command) + " " + std::string(email);
  std::string out(text);
  for (auto at = out.find(placeholder); at != std::string::npos;
       at = out.find(placeholder, at + concrete.size())) {
    out.replace(at, placeholder.size(), concrete);
  }
  return out;
}

}  // namespace iop::auth
