// libFuzzer target for the token-endpoint readers (STYLE.md §3.10): parse_token_response,
// parse_device_authorization and next_device_step on the same HTTP answer, and decode_id_token on
// the body both as it is and as the payload of a compact JWS. Besides the sanitizers, it checks
// what the headers promise of an accepted answer:
// - a grant has a plausible access token, expires_in within 1 s .. 24 h, and a plausible
//   refresh token when there is one;
// - a device authorization has expires_in within 1 s .. 24 h, interval within 1 s .. 5 min, and a
//   non-empty user code, device code and verification URI;
// - a device-flow step keeps polling with an interval of at least 1 s;
// - an error's explanation, and the Error made of it, are never empty.
//
// First input byte: the HTTP status (an index into a table of the statuses Microsoft answers
// with). Second byte: where the Retry-After header value ends (0: no header). The rest: the body.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/base64.hpp"
#include "auth/device_flow.hpp"
#include "auth/id_token.hpp"
#include "auth/token_response.hpp"
#include "fuzz/require.hpp"

namespace {

using namespace iop::auth;
using std::chrono::seconds;

using iop::fuzz::require;

constexpr std::array<int, 16> statuses = {200, 200, 200, 400, 400, 401, 403, 404,
                                          408, 429, 500, 502, 503, 504, 302, 0};

void check_token(int status, std::string_view body, std::optional<std::string_view> retry_after) {
  auto grant = parse_token_response(status, body, retry_after);
  if (grant) {
    require(plausible_token(grant->access_token.reveal()));
    require(grant->expires_in >= seconds(1) && grant->expires_in <= seconds(24 * 60 * 60));
    if (grant->refresh_token) {
      require(plausible_token(grant->refresh_token->reveal()));
    }
    return;
  }
  const TokenError& e = grant.error();
  require(!e.explanation.empty());
  require(!to_error(e).message.empty());
  for (const auto current : {seconds(1), seconds(5), seconds(300)}) {
    const DevicePollStep step = next_device_step(e, current);
    if (step.action == DevicePollAction::keep_polling) {
      require(step.interval >= seconds(1));
    } else {
      require(!step.message.empty());
    }
  }
}

void check_device(int status, std::string_view body) {
  auto authorization = parse_device_authorization(status, body);
  if (!authorization) {
    require(!authorization.error().message.empty());
    return;
  }
  require(authorization->expires_in >= seconds(1) &&
          authorization->expires_in <= seconds(24 * 60 * 60));
  require(authorization->interval >= seconds(1) && authorization->interval <= seconds(5 * 60));
  require(!authorization->user_code.empty());
  require(!authorization->device_code.empty());
  require(!authorization->verification_uri.empty());
  for (const auto remaining : {seconds(-5), seconds(0), seconds(59), seconds(24 * 60 * 60)}) {
    require(!countdown_line(*authorization, remaining).empty());
  }
}

void check_id_token(std::string_view jwt) {
  auto claims = decode_id_token(jwt);
  if (!claims) {
    require(!claims.error().message.empty());
    return;
  }
  const auto candidates = identity_candidates(*claims);
  for (const auto& c : candidates) {
    require(!c.empty());
  }
  (void)identity_matches(*claims, "alice@contoso.example");
  if (!candidates.empty()) {
    // A candidate that is an address matches itself.
    (void)identity_matches(*claims, candidates.front());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) {
    return 0;
  }
  const int status = statuses[data[0] % statuses.size()];
  const std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);
  std::optional<std::string_view> retry_after;
  std::string_view body = rest;
  if (const std::size_t cut = data[1] % 16; cut != 0 && cut <= rest.size()) {
    retry_after = rest.substr(0, cut - 1);
    body = rest.substr(cut - 1);
  }

  check_token(status, body, retry_after);
  check_device(status, body);
  check_id_token(body);
  // The body as the payload of an id_token, so that the claims reader sees JSON.
  check_id_token("eyJhbGciOiJSUzI1NiJ9." + base64url_encode(body) + ".c2ln");
  return 0;
}
