#pragma once
// The test token endpoint (tests/peers/token_endpoint.py, shaped like Microsoft's identity
// platform v2.0) as a fixture: started on a free loopback port, killed at destruction. The
// admin helpers drive its JSON admin API; each throws std::runtime_error when the peer does not
// answer 200. The script's docstring lists every endpoint, admin call and scripted behaviour.

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"

namespace iop::test {

// One HTTP answer, whatever its status.
struct HttpReply {
  long status = 0;
  std::string body;
  std::string location;  // the Location header, "" when there is none
};

class TokenEndpointPeer {
 public:
  // Starts the script and waits (bounded) until it has published its port. Throws
  // std::runtime_error with the peer's log when it does not come up.
  TokenEndpointPeer();
  ~TokenEndpointPeer();
  TokenEndpointPeer(const TokenEndpointPeer&) = delete;
  TokenEndpointPeer& operator=(const TokenEndpointPeer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // http://127.0.0.1:P
  [[nodiscard]] std::string base_url() const;
  // http://127.0.0.1:P/{tenant}/oauth2/v2.0/token; every tenant segment is accepted, and an
  // RS256 client assertion's `aud` must be this exact URL.
  [[nodiscard]] std::string token_url(const std::string& tenant = "common") const;
  // http://127.0.0.1:P/{tenant}/oauth2/v2.0/authorize (no query: the caller adds client_id,
  // response_type, redirect_uri, scope, state, code_challenge, code_challenge_method, ...).
  [[nodiscard]] std::string authorize_url_base(const std::string& tenant = "common") const;
  // http://127.0.0.1:P/{tenant}/oauth2/v2.0/devicecode (RFC 8628 s3.1 device authorization).
  [[nodiscard]] std::string device_url(const std::string& tenant = "common") const;
  // http://127.0.0.1:P/introspect (RFC 7662, for Dovecot's oauth2 passdb)
  [[nodiscard]] std::string introspect_url() const;

  // A new refresh token for `email` (the account is created on first use).
  std::string add_account(const std::string& email);
  // Merges `config` (client_id, client_secret, expires_in, delay_ms, rotation) into the peer's
  // configuration; returns the whole configuration.
  nlohmann::json configure(const nlohmann::json& config);
  // Appends scripted faults, consumed one per token request; for `email`'s requests only when
  // `email` is not empty.
  void add_faults(const nlohmann::json& faults, const std::string& email = "");
  // Drops every queued fault.
  void clear_faults();
  // Revokes every refresh token of `email`.
  void revoke(const std::string& email);
  // Makes every access token issued for `email` so far inactive at introspection.
  void revoke_access_tokens(const std::string& email);
  // {"valid": bool, "revoked": bool, "email": string|null} for `refresh_token`.
  nlohmann::json check(const std::string& refresh_token);
  // RFC 7662 introspection of `access_token`: {"active": bool, "email", "exp", "scope"}.
  nlohmann::json introspect(const std::string& access_token);
  // {"total", "per_account": {email: n}, "in_flight", "max_in_flight"}.
  nlohmann::json stats();
  // Zeroes the counters (the per-grant ones too) and forgets the device polls.
  void reset_stats();

  // Who signs in at the authorize and device endpoints from now on, whatever the authorize
  // request's login_hint says (the default: the login_hint, else the account added last).
  // Access tokens from that sign-in open `mailbox` at introspection (default: `email`), e.g.
  // alice signing in for shared@: Dovecot sends introspection only the token. An empty `email`
  // restores the default.
  void set_signin(const std::string& email, const std::string& mailbox = "");
  // The next authorize request ends with `outcome`, consumed once: {"error", "code"?,
  // "description"?} redirects with that error (e.g. {"error": "consent_required"} carries
  // AADSTS65001, "access_denied" AADSTS65004; "code" names another AADSTS number), or
  // {"state": "..."} makes the next success redirect carry that state instead of the request's.
  void set_authorize_outcome(const nlohmann::json& outcome);
  // The next id_token issued is broken, consumed once: "not_a_jwt" (that very string),
  // "bad_payload" (its payload is not base64url JSON) or "no_identity" (no preferred_username
  // nor email).
  void set_id_token_fault(const std::string& kind);
  // How every later device code behaves: {"steps": [...], "interval"?, "expires_in"?,
  // "missing"?: [field]}, one step per poll among pending, slow_down, ok, expired, declined,
  // access_denied, bad_code (the last step repeats; after ok the code is redeemed); {} restores
  // the default (["pending", "ok"], interval 5, expires_in 900). Forgets the recorded polls.
  // Returns the script in force.
  nlohmann::json set_device_script(const nlohmann::json& script);
  // Every device-code poll since the script was set: [{"t": arrival in seconds of
  // CLOCK_MONOTONIC (std::chrono::steady_clock), "result": the error answered, "ok" or
  // "fault", "interval": the seconds the client must now wait before its next poll}].
  nlohmann::json device_polls();
  // Registers a confidential client for the client_credentials grant: {"client_id",
  // "client_secret"?, "certificate_pem"?, "mailbox"}; its access tokens introspect as
  // `mailbox`. Returns {"client_id", "x5t#S256"?} (the certificate's thumbprint, which an
  // assertion's header must carry).
  nlohmann::json register_app(const nlohmann::json& app);

  // The "browser": GETs `authorize_url` without following redirects. A sign-in answers 302
  // with `location` = the redirect URI plus code and state (or error and error_description);
  // a bad redirect URI answers a 400 page.
  HttpReply authorize(const std::string& authorize_url);
  // authorize(), for a sign-in that must redirect: returns the Location the browser goes to
  // next (the test then GETs it to reach the program's loopback listener). Throws
  // std::runtime_error with the status and page on any answer but 302.
  std::string follow_authorize(const std::string& authorize_url);
  // POSTs `fields` form-encoded (application/x-www-form-urlencoded) to `url`, as a token client
  // does; returns the answer whatever its status.
  HttpReply post_form(const std::string& url,
                      const std::vector<std::pair<std::string, std::string>>& fields);

 private:
  nlohmann::json admin_post(const std::string& call, const nlohmann::json& body);

  TempDir dir_;
  Process process_;
  int port_ = 0;
};

}  // namespace iop::test
