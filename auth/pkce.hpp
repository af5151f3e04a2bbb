#pragma once
// The authorization code flow of a native app (RFC 6749 §4.1, RFC 8252) with PKCE (RFC 7636):
// the verifier/challenge pair, the state, the authorization request URL, and reading the redirect
// the browser brings back (to the loopback listener) or the user pastes (headless sign-in).
//
// Everything here is pure (auth_core) except make_pkce() and make_state(), which draw from
// OpenSSL's random generator and are defined in the auth library (auth/pkce_random.cpp).

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

struct PkcePair {
  Secret verifier;              // RFC 7636 §4.1 code_verifier: 43..128 unreserved characters
  std::string challenge;        // RFC 7636 §4.2 code_challenge = BASE64URL(SHA256(verifier))
  std::string method = "S256";  // code_challenge_method
};

// A fresh pair: the verifier is base64url of 32 random bytes (43 characters, RFC 7636 §4.1's
// recommendation). Throws std::runtime_error if the random generator fails. (auth library)
PkcePair make_pkce();

// A fresh `state` (RFC 6749 §10.12): base64url of 32 random bytes (256 bits), URL-safe.
// Throws std::runtime_error if the random generator fails. (auth library)
std::string make_state();

// The S256 pair for a given `verifier` (the deterministic half of make_pkce, RFC 7636 §4.2).
// Precondition: `verifier` is 43..128 characters of [A-Za-z0-9-._~].
PkcePair pkce_from_verifier(Secret verifier);

// application/x-www-form-urlencoded encoding of one name or value: RFC 3986 unreserved
// characters stay, space becomes '+', every other byte becomes %XX (upper-case hex).
std::string form_urlencode(std::string_view value);

struct AuthorizeRequest {
  std::string authorize_endpoint;  // may already carry a query string
  std::string client_id;
  std::string redirect_uri;  // e.g. LoopbackListener::redirect_uri(), "http://localhost:PORT/"
  std::string scope;         // space-separated
  std::string state;
  std::string code_challenge;
  std::string login_hint;  // empty: not sent
  // Provider-specific parameters, e.g. Google's {"access_type","offline"}, {"prompt","consent"}.
  // One whose name is a parameter set above replaces it (e.g. {"response_mode", "..."}), or
  // with an empty value removes it, for a provider that refuses it.
  std::vector<std::pair<std::string, std::string>> extra;
};

// The URL to open in a browser: `authorize_endpoint` plus client_id, response_type=code,
// redirect_uri, response_mode=query, scope, state, code_challenge, code_challenge_method=S256,
// login_hint (when set) and `extra`, each value form-urlencoded. Joined with '&' when the
// endpoint already has a query.
std::string authorize_url(const AuthorizeRequest& request);

// Reads the authorization response (RFC 6749 §4.1.2) from `pasted_or_target`: either the full
// URL the browser landed on, pasted by a user (surrounding whitespace is ignored), or an HTTP
// request-target ("/?code=...&state=...") received by the loopback listener. Query values are
// percent-decoded ('+' is a space). Returns the authorization code.
//
// Fails with Errc::invalid_argument and a one-line reason that never holds the code:
// - the text is not a URL, or is one for another scheme, host, port or path than
//   `expected_redirect_uri` (the message names what was expected);
// - the state is missing or differs from `expected_state` (the answer is not for this request);
// - an error redirect (RFC 6749 §4.1.2.1): explained from its `error` and, for Microsoft, the
//   AADSTS code in `error_description` (named in the message, "AADSTS65004");
// - no code, a malformed code, a malformed %-escape, or a repeated code/state/error parameter.
Result<Secret> parse_redirect(std::string_view pasted_or_target,
                              std::string_view expected_redirect_uri,
                              std::string_view expected_state);

}  // namespace iop::auth
