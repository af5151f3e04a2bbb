#pragma once
// The test token endpoint (tests/peers/token_endpoint.py, shaped like Microsoft's identity
// platform v2.0) as a fixture: started on a free loopback port, killed at destruction. The
// admin helpers drive its JSON admin API; each throws std::runtime_error when the peer does not
// answer 200.

#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"

namespace iop::test {

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
  // http://127.0.0.1:P/common/oauth2/v2.0/token
  [[nodiscard]] std::string token_url() const;
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
  // Zeroes the counters.
  void reset_stats();

 private:
  nlohmann::json admin_post(const std::string& call, const nlohmann::json& body);

  TempDir dir_;
  Process process_;
  int port_ = 0;
};

}  // namespace iop::test
