#pragma once
// The OAuth2 token endpoint client: refresh-token grant with retries.

#include <expected>
#include <string>
#include <string_view>

#include "auth/backoff.hpp"
#include "auth/http_client.hpp"
#include "auth/token_response.hpp"
#include "common/asio.hpp"
#include "common/secret.hpp"

namespace iop::auth {

struct OAuthClientSettings {
  std::string token_endpoint;
  std::string client_id;
  Secret client_secret;  // empty for public clients
  std::string scope = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
  HttpOptions http;
  BackoffPolicy backoff;
};

class TokenEndpoint {
 public:
  // `blocking` runs the curl calls (a thread pool's executor).
  TokenEndpoint(OAuthClientSettings settings, net::any_io_executor blocking);

  // One refresh-token grant (client_id, grant_type=refresh_token, refresh_token, scope and
  // client_secret when set). Transient failures are retried with capped exponential backoff and
  // jitter, honouring Retry-After, up to settings.backoff.max_attempts; the wait happens on a
  // timer of the calling coroutine's executor. Permanent and bad-response failures return at
  // once. Logs one line per failed attempt with `email`, the OAuth error, AADSTS code and
  // correlation id (never a token or a response body).
  awaitable<std::expected<TokenGrant, TokenError>> refresh(Secret refresh_token,
                                                           std::string email);

  // One attempt, blocking; for the CLI and tests.
  std::expected<TokenGrant, TokenError> refresh_once(const Secret& refresh_token) const;

  [[nodiscard]] const OAuthClientSettings& settings() const { return settings_; }

 private:
  OAuthClientSettings settings_;
  net::any_io_executor blocking_;
};

}  // namespace iop::auth
