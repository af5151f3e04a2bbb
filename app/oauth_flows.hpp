#pragma once
// The interactive side of the authorization flows (issue #6): what the person at the terminal
// sees and does. Each flow ends with a token grant from the endpoint, or a one-line error and
// nothing obtained. The protocol pieces are in auth/ (pkce, device_flow, id_token,
// loopback_listener, client_assertion); storing the result is the caller's job.

#include <chrono>
#include <string>

#include "auth/provider.hpp"
#include "auth/token_endpoint.hpp"
#include "auth/token_response.hpp"
#include "common/result.hpp"

namespace iop::app {

struct FlowContext {
  const auth::ResolvedProvider& provider;
  const auth::OAuthClientSettings& client;  // token endpoint, client id and authentication
  const auth::TokenEndpoint& endpoint;
  std::string login_hint;  // who should sign in
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

// Authorization code + PKCE with a one-shot listener on 127.0.0.1 (RFC 8252 §7.3). Prints the
// URL, and opens it with xdg-open when a desktop session is there.
Result<auth::TokenGrant> run_browser_flow(const FlowContext& ctx);

// The same for a machine without a browser: prints the URL; the person signs in anywhere and
// pastes the address the browser ended on (an unreachable http://localhost:PORT/?code=...).
Result<auth::TokenGrant> run_paste_flow(const FlowContext& ctx);

// RFC 8628 device authorization: shows where to go and which code to enter, then polls.
Result<auth::TokenGrant> run_device_flow(const FlowContext& ctx);

// Client credentials (RFC 6749 §4.4): one grant proves the credential and gives the first token.
Result<auth::TokenGrant> run_client_credentials_flow(const FlowContext& ctx);

// A refresh token brought from elsewhere, proven by one refresh (the rotated token, if any, is in
// the grant).
Result<auth::TokenGrant> run_refresh_token_import(const FlowContext& ctx,
                                                  const Secret& refresh_token);

// Whether a graphical session is there to open a browser in (DISPLAY or WAYLAND_DISPLAY).
bool desktop_available();

}  // namespace iop::app
