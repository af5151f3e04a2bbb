#include "auth/pkce.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <optional>

#include "auth/aadsts.hpp"
#include "auth/base64.hpp"
#include "auth/token_response.hpp"
#include "common/ascii.hpp"
#include "common/host_port.hpp"
#include "common/percent.hpp"

namespace iop::auth {

namespace {

// A pasted URL or request-target longer than this is not a redirect of ours. Microsoft's
// authorization codes are 1-2 KB; the listener's whole request head is limited to 8 KiB.
constexpr std::size_t max_redirect_bytes = 16 * 1024;
// error_description is shown only when no better explanation is known, cut to one short line.
constexpr std::size_t max_description_chars = 200;

bool unreserved(char c) {
  return is_ascii_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view space = " \t\r\n\v\f";
  const auto first = s.find_first_not_of(space);
  if (first == std::string_view::npos) {
    return {};
  }
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

// The parts of an http(s) URL or request-target that decide whether a redirect is ours.
struct UrlParts {
  std::string scheme;  // lower-case; empty for a request-target
  std::string host;    // lower-case, IPv6 with its brackets; empty for a request-target
  int port = 0;        // the scheme's default when absent
  std::string_view path;
  std::string_view query;  // after '?', before '#'
};

// Splits "scheme://authority/path?query#fragment" or "/path?query#fragment". No userinfo: a
// loopback redirect never carries one, and "http://localhost:1@evil/" must not look like ours.
std::optional<UrlParts> split_url(std::string_view url) {
  UrlParts parts;
  std::string_view rest = url;
  if (!rest.starts_with('/')) {
    const auto sep = rest.find("://");
    if (sep == std::string_view::npos || sep == 0) {
      return std::nullopt;
    }
    const auto scheme = rest.substr(0, sep);
    if (!std::all_of(scheme.begin(), scheme.end(), [](char c) {
          return is_ascii_alnum(c) || c == '+' || c == '-' || c == '.';
        })) {
      return std::nullopt;
    }
    parts.scheme = ascii_lowered(scheme);
    rest.remove_prefix(sep + 3);
    const auto authority_end = rest.find_first_of("/?#");
    const auto authority = rest.substr(0, authority_end);
    rest =
        authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
    if (authority.empty() || authority.find('@') != std::string_view::npos) {
      return std::nullopt;
    }
    const auto parsed = parse_authority(authority);
    if (!parsed) {
      return std::nullopt;
    }
    const std::string host = parsed->bracketed ? "[" + parsed->host + "]" : parsed->host;
    // 253: the longest DNS name; anything longer is not a host we could have been given.
    if (host.size() > 253 || !std::all_of(host.begin(), host.end(), [](char c) {
          return unreserved(c) || c == '[' || c == ']' || c == ':';
        })) {
      return std::nullopt;
    }
    parts.host = ascii_lowered(host);
    parts.port = parsed->port.value_or(parts.scheme == "https"  ? 443
                                       : parts.scheme == "http" ? 80
                                                                : 0);
  }
  if (const auto hash = rest.find('#'); hash != std::string_view::npos) {
    rest = rest.substr(0, hash);
  }
  const auto question = rest.find('?');
  parts.path = rest.substr(0, question);
  if (parts.path.empty()) {
    parts.path = "/";
  }
  if (question != std::string_view::npos) {
    parts.query = rest.substr(question + 1);
  }
  return parts;
}

// The first line of an error_description, printable ASCII only, cut short. Shown only when
// nothing better is known; it comes from the authorization server through the browser.
std::string description_line(std::string_view description) {
  std::string out;
  for (const char c : description) {
    if (c == '\r' || c == '\n' || out.size() >= max_description_chars) {
      break;
    }
    out += (c >= ' ' && c < 0x7f) ? c : '?';
  }
  return std::string(trim(out));
}

// RFC 6749 §4.1.2.1 error codes, OpenID Connect Core §3.1.2.6's, and the two more Microsoft's
// authorization endpoint documents (invalid_client, invalid_resource). Any other value is not
// repeated in a message.
constexpr std::array<std::string_view, 15> known_redirect_errors = {
    "invalid_request",         "unauthorized_client",
    "access_denied",           "unsupported_response_type",
    "invalid_scope",           "server_error",
    "temporarily_unavailable", "interaction_required",
    "login_required",          "account_selection_required",
    "consent_required",        "invalid_request_uri",
    "invalid_request_object",  "invalid_client",
    "invalid_resource",
};

std::string_view redirect_error_explanation(std::string_view error) {
  if (error == "access_denied") {
    return "you declined the requested permissions (or the sign-in was cancelled); run the "
           "command again and accept the consent prompt";
  }
  if (error == "consent_required") {
    return "the application needs consent for its permissions; grant consent (or ask an "
           "administrator for admin consent), then run the command again";
  }
  if (error == "interaction_required" || error == "login_required" ||
      error == "account_selection_required") {
    return "the sign-in needs more interaction than happened; run the command again and finish "
           "the sign-in in the browser";
  }
  if (error == "invalid_scope") {
    return "the requested scope is not valid for this application; check the provider's scope";
  }
  if (error == "unauthorized_client" || error == "unsupported_response_type") {
    return "this application may not use the authorization code flow; check the client id and "
           "the app registration (public client, Mobile and desktop platform)";
  }
  if (error == "server_error" || error == "temporarily_unavailable") {
    return "the sign-in service had a temporary problem; run the command again in a moment";
  }
  return {};
}

// One line for an error redirect: "sign-in failed (access_denied, AADSTS65004): ...".
Error explain_redirect_error(std::string_view error, std::string_view description) {
  const int aadsts = extract_aadsts(description);
  const auto info = aadsts != 0 ? lookup_aadsts(aadsts) : std::nullopt;
  const bool known_error = std::find(known_redirect_errors.begin(), known_redirect_errors.end(),
                                     error) != known_redirect_errors.end();
  std::string details(known_error ? error : std::string_view("unrecognized error"));
  if (aadsts != 0) {
    details += fmt::format(", AADSTS{}", aadsts);
  }
  std::string explanation;
  if (info) {
    explanation = std::string(info->explanation);
  } else if (const auto text = redirect_error_explanation(error); !text.empty()) {
    explanation = std::string(text);
  } else {
    const auto line = description_line(description);
    explanation = line.empty() ? std::string("the sign-in service refused the request")
                               : "the sign-in service said: " + line;
  }
  return Error{Errc::invalid_argument,
               fmt::format("sign-in failed ({}): {}", details, explanation)};
}

std::string origin_of(const UrlParts& p) {
  return fmt::format("{}://{}:{}/", p.scheme, p.host, p.port);
}

}  // namespace

PkcePair pkce_from_verifier(Secret verifier) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int size = 0;
  if (EVP_Digest(verifier.reveal().data(), verifier.size(), digest.data(), &size, EVP_sha256(),
                 nullptr) != 1) {
    // SHA-256 over memory cannot fail short of a broken OpenSSL installation.
    throw std::runtime_error("SHA-256 is not available");
  }
  PkcePair pair;
  pair.challenge = base64url_encode(std::string_view(reinterpret_cast<const char*>(digest.data()),
                                                     static_cast<std::size_t>(size)));
  pair.verifier = std::move(verifier);
  return pair;
}

std::string form_urlencode(std::string_view value) {
  constexpr std::string_view hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size() * 3);
  for (const char c : value) {
    if (unreserved(c)) {
      out += c;
    } else if (c == ' ') {
      out += '+';
    } else {
      const auto b = static_cast<unsigned char>(c);
      out += '%';
      out += hex[b >> 4];
      out += hex[b & 15];
    }
  }
  return out;
}

std::string authorize_url(const AuthorizeRequest& request) {
  // RFC 7636 §4.3 and RFC 6749 §4.1.1. response_mode=query is Microsoft's default for this
  // flow, made explicit so the code always arrives in the query the listener reads.
  std::vector<std::pair<std::string, std::string>> params = {
      {"client_id", request.client_id},
      {"response_type", "code"},
      {"redirect_uri", request.redirect_uri},
      {"response_mode", "query"},
      {"scope", request.scope},
      {"state", request.state},
      {"code_challenge", request.code_challenge},
      {"code_challenge_method", "S256"},
  };
  if (!request.login_hint.empty()) {
    params.emplace_back("login_hint", request.login_hint);
  }
  for (const auto& [name, value] : request.extra) {
    const auto same = std::find_if(params.begin(), params.end(),
                                   [&name = name](const auto& p) { return p.first == name; });
    if (same != params.end() && value.empty()) {
      params.erase(same);  // a provider that refuses the parameter altogether
    } else if (same != params.end()) {
      same->second = value;
    } else {
      params.emplace_back(name, value);
    }
  }
  std::string url = request.authorize_endpoint;
  char sep = url.find('?') == std::string::npos ? '?' : '&';
  if (!url.empty() && (url.back() == '?' || url.back() == '&')) {
    sep = '\0';
  }
  for (const auto& [name, value] : params) {
    if (sep != '\0') {
      url += sep;
    }
    sep = '&';
    url += form_urlencode(name);
    url += '=';
    url += form_urlencode(value);
  }
  return url;
}

Result<Secret> parse_redirect(std::string_view pasted_or_target,
                              std::string_view expected_redirect_uri,
                              std::string_view expected_state) {
  const auto expected = split_url(expected_redirect_uri);
  if (!expected || expected->scheme.empty()) {
    return fail(Errc::internal, "the expected redirect URI is not an absolute URL");
  }
  const auto expected_text =
      fmt::format("{}://{}:{}{}", expected->scheme, expected->host, expected->port, expected->path);
  const std::string_view input = trim(pasted_or_target);
  if (input.empty()) {
    return fail(Errc::invalid_argument,
                fmt::format("nothing was pasted; paste the address the browser shows after "
                            "sign-in (it starts with {})",
                            expected_text));
  }
  if (input.size() > max_redirect_bytes) {
    return fail(Errc::invalid_argument,
                fmt::format("the sign-in answer is longer than {} KiB; paste only the address "
                            "the browser shows after sign-in",
                            max_redirect_bytes / 1024));
  }
  const auto got = split_url(input);
  if (!got) {
    return fail(Errc::invalid_argument,
                fmt::format("the sign-in answer is not a web address; paste the whole address "
                            "the browser shows after sign-in (it starts with {})",
                            expected_text));
  }
  // A request-target reached our own listener, so only its path is compared.
  if (!got->scheme.empty() && (got->scheme != expected->scheme || got->host != expected->host ||
                               got->port != expected->port)) {
    return fail(Errc::invalid_argument,
                fmt::format("the address is not this program's sign-in answer: expected one "
                            "starting with {}, got {}",
                            expected_text, origin_of(*got)));
  }
  if (got->path != expected->path) {
    return fail(Errc::invalid_argument,
                fmt::format("the address is not this program's sign-in answer: expected one "
                            "starting with {} (the path differs)",
                            expected_text));
  }

  std::optional<std::string> code;
  std::optional<std::string> state;
  std::optional<std::string> error;
  std::optional<std::string> description;
  std::string_view query = got->query;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) {
      continue;
    }
    const auto eq = pair.find('=');
    const auto name = percent_decode(pair.substr(0, eq), PlusIs::space);
    const auto value = percent_decode(
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), PlusIs::space);
    if (!name || !value) {
      return fail(Errc::invalid_argument,
                  "the sign-in answer holds a malformed %-escape; paste the address exactly as "
                  "the browser shows it");
    }
    std::optional<std::string>* slot = *name == "code"                ? &code
                                       : *name == "state"             ? &state
                                       : *name == "error"             ? &error
                                       : *name == "error_description" ? &description
                                                                      : nullptr;
    if (slot == nullptr) {
      continue;
    }
    // RFC 6749 §3.1: parameters MUST NOT be included more than once.
    if (slot->has_value()) {
      return fail(Errc::invalid_argument,
                  fmt::format("the sign-in answer repeats its '{}' parameter; start again", *name));
    }
    *slot = std::move(*value);
  }

  constexpr std::string_view state_mismatch =
      "the sign-in answer does not belong to this request (state mismatch); start again";
  if (error) {
    // An error redirect carries the state too (RFC 6749 §4.1.2.1, "REQUIRED if a state parameter
    // was present in the client authorization request", and we always send one). One without
    // it, or for another request, is not explained: any local process can reach the loopback
    // listener, and "you declined" would be a lie it could make us tell.
    if (!state || *state != expected_state) {
      return fail(Errc::invalid_argument, std::string(state_mismatch));
    }
    return std::unexpected(explain_redirect_error(*error, description.value_or("")));
  }
  if (!code || code->empty()) {
    return fail(Errc::invalid_argument,
                fmt::format("the sign-in answer has no authorization code; paste the whole address "
                            "the browser shows after sign-in, everything after '{}' included",
                            expected_text));
  }
  Secret result(std::move(*code));
  // RFC 6749 §10.12: the state binds the answer to this request (CSRF).
  if (!state || *state != expected_state) {
    return fail(Errc::invalid_argument, std::string(state_mismatch));
  }
  if (!plausible_token(result.reveal())) {
    return fail(Errc::invalid_argument,
                "the authorization code in the sign-in answer is malformed; paste the address "
                "exactly as the browser shows it");
  }
  return result;
}

}  // namespace iop::auth
