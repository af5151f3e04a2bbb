#pragma once
// The OAuth2 token endpoint client: every grant this program uses (refresh token, client
// credentials, authorization code, device code), with retries for the ones run unattended.

#include <expected>
#include <string>
#include <string_view>

#include "auth/backoff.hpp"
#include "auth/http_client.hpp"
#include "auth/token_response.hpp"
#include "common/asio.hpp"
#include "common/secret.hpp"

namespace iop::auth {

// One OAuth client at one token endpoint. The default comes from the configuration; accounts
// with their own provider profile, tenant or client id get their own (auth/provider.hpp).
struct OAuthClientSettings {
  std::string token_endpoint;
  std::string client_id;
  Secret client_secret;  // empty for public clients
  // PEM certificate and RSA private key: the client authenticates with an RFC 7523 assertion
  // instead of a secret (Microsoft's recommendation for app-only access).
  Secret client_certificate;
  std::string scope = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
  HttpOptions http;
  BackoffPolicy backoff;
};

using FormFields = std::vector<std::pair<std::string, Secret>>;

class TokenEndpoint {
 public:
  // `http` runs the curl calls: a thread pool's executor that runs nothing else a login waits
  // for (each call blocks a thread for up to settings.http.timeout; issue #7, item 6).
  TokenEndpoint(OAuthClientSettings settings, net::any_io_executor http);

  // One refresh-token grant (client_id, grant_type=refresh_token, refresh_token, scope and
  // client_secret when set). Transient failures are retried with capped exponential backoff and
  // jitter, honouring Retry-After, up to settings.backoff.max_attempts; the wait happens on a
  // timer of the calling coroutine's executor. Permanent and bad-response failures return at
  // once. Logs one line per failed attempt with `email`, the OAuth error, AADSTS code and
  // correlation id (never a token or a response body).
  awaitable<std::expected<TokenGrant, TokenError>> refresh(Secret refresh_token, std::string email);
  // The same for another client (an account with its own profile). `client` is a reference
  // (GCC 12 mishandles owning by-value coroutine arguments, docs/design.md): the caller keeps it
  // alive until the call completes.
  awaitable<std::expected<TokenGrant, TokenError>> refresh(const OAuthClientSettings& client,
                                                           Secret refresh_token, std::string email);

  // A client-credentials grant (RFC 6749 §4.4) for `client`, retried like a refresh. No
  // refresh token comes back: the next one is another client-credentials grant.
  awaitable<std::expected<TokenGrant, TokenError>> client_credentials(
      const OAuthClientSettings& client, std::string email);

  // One attempt, blocking; for the CLI and tests.
  std::expected<TokenGrant, TokenError> refresh_once(const Secret& refresh_token) const;

  // One attempt of any grant, blocking: `fields` plus client_id and the client's
  // authentication (client_secret, or a client assertion built now from its certificate).
  // For the interactive flows (authorization code, device code), which a person waits for.
  std::expected<TokenGrant, TokenError> grant_once(const OAuthClientSettings& client,
                                                   FormFields fields) const;

  [[nodiscard]] const OAuthClientSettings& settings() const { return settings_; }

 private:
  // Runs grant_once(client, fields) with the backoff policy of `client`.
  awaitable<std::expected<TokenGrant, TokenError>> with_retries(const OAuthClientSettings& client,
                                                                const FormFields& fields,
                                                                const std::string& email);

  OAuthClientSettings settings_;
  net::any_io_executor http_;
};

}  // namespace iop::auth
