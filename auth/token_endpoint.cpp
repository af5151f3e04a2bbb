#include "auth/token_endpoint.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "auth/client_assertion.hpp"
#include "common/blocking.hpp"

namespace iop::auth {

namespace {

using GrantResult = std::expected<TokenGrant, TokenError>;

// Uniform in [0, 1). One generator per thread: no locking, and coroutines resumed on another
// thread simply use that thread's generator.
double jitter() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

TokenError implausible_refresh_token() {
  TokenError e;
  e.kind = GrantFailure::bad_response;
  e.explanation = "the stored refresh token contains characters a token cannot have";
  return e;
}

// A post_form failure as a TokenError: network trouble is worth retrying; an oversized answer
// is a bad response; a refused URL is our configuration.
TokenError transport_error(const Error& error) {
  TokenError e;
  switch (error.code) {
    case Errc::endpoint_bad_response:
      e.kind = GrantFailure::bad_response;
      break;
    case Errc::invalid_argument:
      e.kind = GrantFailure::config;
      break;
    default:
      e.kind = GrantFailure::transient;
      break;
  }
  e.explanation = error.message;
  return e;
}

// One line per failed attempt. Only classified fields go in: never a token or a body.
void log_failure(const std::string& email, int attempt, int max_attempts, const TokenError& e,
                 std::optional<std::chrono::milliseconds> retry_in) {
  const auto level = e.kind == GrantFailure::transient ? spdlog::level::warn : spdlog::level::err;
  const std::string aadsts = e.aadsts != 0 ? fmt::format(" AADSTS{}", e.aadsts) : "";
  const std::string correlation =
      e.correlation_id.empty() ? "" : fmt::format(" correlation_id={}", e.correlation_id);
  const std::string next = retry_in ? fmt::format("; retrying in {} ms", retry_in->count())
                           : e.kind == GrantFailure::transient ? "; giving up for now"
                                                               : "";
  spdlog::log(level,
              "account={} token refresh attempt {}/{} failed: {} error={}{}{} http_status={}: "
              "{}{}",
              email, attempt, max_attempts, to_string(e.kind), e.error.empty() ? "-" : e.error,
              aadsts, correlation, e.http_status, e.explanation, next);
}

// RFC 6749 §6 plus Microsoft's v2.0 requirement of client_id and scope on refresh (client_id
// and the client's authentication are added by grant_once).
FormFields refresh_fields(const OAuthClientSettings& client, const Secret& refresh_token) {
  FormFields fields;
  fields.reserve(6);
  fields.emplace_back("grant_type", Secret(std::string_view("refresh_token")));
  fields.emplace_back("refresh_token", refresh_token);
  fields.emplace_back("scope", Secret(client.scope));
  return fields;
}

}  // namespace

TokenEndpoint::TokenEndpoint(OAuthClientSettings settings, net::any_io_executor http)
    : settings_(std::move(settings)), http_(std::move(http)) {}

std::expected<TokenGrant, TokenError> TokenEndpoint::grant_once(const OAuthClientSettings& client,
                                                                FormFields fields) const {
  fields.emplace_back("client_id", Secret(client.client_id));
  if (!client.client_certificate.empty()) {
    // RFC 7523 §2.2: a fresh assertion per request (each has its own jti and a short life).
    auto certificate = load_client_certificate(client.client_certificate);
    if (!certificate) {
      TokenError e;
      e.kind = GrantFailure::config;
      e.explanation = certificate.error().message;
      return std::unexpected(e);
    }
    auto assertion = make_client_assertion(*certificate, client.client_id, client.token_endpoint,
                                           std::chrono::system_clock::now());
    if (!assertion) {
      TokenError e;
      e.kind = GrantFailure::config;
      e.explanation = assertion.error().message;
      return std::unexpected(e);
    }
    fields.emplace_back(
        "client_assertion_type",
        Secret(std::string_view("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")));
    fields.emplace_back("client_assertion", std::move(*assertion));
  } else if (!client.client_secret.empty()) {
    fields.emplace_back("client_secret", client.client_secret);
  }
  auto response = post_form(client.token_endpoint, fields, client.http);
  if (!response) {
    return std::unexpected(transport_error(response.error()));
  }
  // The body carries the new tokens: keep it in a Secret so it is wiped after parsing.
  const Secret body(std::move(response->body));
  std::optional<std::string_view> retry_after;
  if (response->retry_after) {
    retry_after = *response->retry_after;
  }
  return parse_token_response(response->status, body.reveal(), retry_after);
}

std::expected<TokenGrant, TokenError> TokenEndpoint::refresh_once(
    const Secret& refresh_token) const {
  // A control character would end up URL-encoded in the body, harmless to HTTP, but such a
  // value was never issued by an endpoint: sending it only burns a request and muddles the log.
  if (!plausible_token(refresh_token.reveal())) {
    return std::unexpected(implausible_refresh_token());
  }
  return grant_once(settings_, refresh_fields(settings_, refresh_token));
}

awaitable<std::expected<TokenGrant, TokenError>> TokenEndpoint::refresh(Secret refresh_token,
                                                                        std::string email) {
  co_return co_await refresh(settings_, std::move(refresh_token), std::move(email));
}

awaitable<std::expected<TokenGrant, TokenError>> TokenEndpoint::refresh(
    const OAuthClientSettings& client, Secret refresh_token, std::string email) {
  if (!plausible_token(refresh_token.reveal())) {
    // Not retried and not sent: no attempt can make this token acceptable.
    const auto e = implausible_refresh_token();
    log_failure(email, 1, std::max(client.backoff.max_attempts, 1), e, std::nullopt);
    co_return std::unexpected(e);
  }
  const FormFields fields = refresh_fields(client, refresh_token);
  co_return co_await with_retries(client, fields, email);
}

awaitable<std::expected<TokenGrant, TokenError>> TokenEndpoint::client_credentials(
    const OAuthClientSettings& client, std::string email) {
  // RFC 6749 §4.4.2; Microsoft wants scope = <resource>/.default.
  FormFields fields;
  fields.emplace_back("grant_type", Secret(std::string_view("client_credentials")));
  fields.emplace_back("scope", Secret(client.scope));
  co_return co_await with_retries(client, fields, email);
}

awaitable<std::expected<TokenGrant, TokenError>> TokenEndpoint::with_retries(
    const OAuthClientSettings& client, const FormFields& fields, const std::string& email) {
  const int max_attempts = std::max(client.backoff.max_attempts, 1);
  const auto started = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    // curl blocks, so the call runs on `http_` (its own pool: a hanging endpoint must not hold
    // up logins that only need the database or Redis).
    GrantResult result = co_await run_on_pool(
        http_, [this, &client, &fields] { return grant_once(client, fields); });
    if (result) {
      co_return result;
    }
    const TokenError& e = result.error();
    if (e.kind != GrantFailure::transient || attempt >= max_attempts) {
      log_failure(email, attempt, max_attempts, e, std::nullopt);
      co_return result;
    }
    const auto delay = backoff_delay(client.backoff, attempt, jitter(), e.retry_after);
    const auto worst_end = std::chrono::steady_clock::now() - started + delay + client.http.timeout;
    if (worst_end > client.backoff.max_total) {
      // Another attempt could outlive the refresh budget (and the lock other instances wait on).
      log_failure(email, attempt, max_attempts, e, std::nullopt);
      co_return result;
    }
    log_failure(email, attempt, max_attempts, e, delay);
    net::steady_timer timer(co_await net::this_coro::executor);
    timer.expires_after(delay);
    co_await timer.async_wait(net::use_awaitable);
  }
}

}  // namespace iop::auth
