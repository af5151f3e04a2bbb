// The test token endpoint's onboarding flows (tests/peers/token_endpoint.py), driven over real
// HTTP before the CLI relies on them: authorize + PKCE S256 + code exchange (RFC 6749 §4.1,
// RFC 7636), id_tokens, the sign-in identity, the device flow (RFC 8628) and the
// client_credentials grant with a secret and with an RS256 client assertion (RFC 7523). Each
// test proves one feature of the peer; failures there would otherwise surface as puzzling CLI
// test failures.

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/base64.hpp"
#include "auth/pkce.hpp"
#include "common/percent.hpp"
#include "tests/support/token_endpoint_peer.hpp"

namespace iop::test {
namespace {

using json = nlohmann::json;
using Fields = std::vector<std::pair<std::string, std::string>>;

constexpr const char* client_id = "test-client";  // the peer's default public client
constexpr const char* redirect_uri = "http://localhost:53682/";
constexpr const char* alice = "alice@example.com";
constexpr const char* imap_scope =
    "https://outlook.office.com/IMAP.AccessAsUser.All offline_access openid profile email";
constexpr const char* app_scope = "https://outlook.office365.com/.default";
constexpr const char* device_grant = "urn:ietf:params:oauth:grant-type:device_code";
constexpr const char* jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

// The query parameters of `url` (a redirect the "browser" was sent to).
std::map<std::string, std::string> query_params(const std::string& url) {
  std::map<std::string, std::string> out;
  const auto q = url.find('?');
  if (q == std::string::npos) {
    return out;
  }
  std::string_view rest(url);
  rest.remove_prefix(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const auto pair = rest.substr(0, amp);
    const auto eq = pair.find('=');
    out[percent_decode(pair.substr(0, eq)).value()] =
        eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1)).value();
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
  }
  return out;
}

// ---- OpenSSL: SHA-256, randomness, an RSA key with a self-signed certificate, RS256

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_Digest failed");
  }
  return {reinterpret_cast<const char*>(digest), size};
}

std::string random_b64url(int bytes) {
  std::string raw(static_cast<std::size_t>(bytes), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  return auth::base64url_encode(raw);
}

// RFC 7636 §4.1: 32 random octets give a 43-character verifier; §4.2: S256 challenge.
std::string new_verifier() { return random_b64url(32); }
std::string challenge_of(const std::string& verifier) {
  return auth::base64url_encode(sha256(verifier));
}

// An app's credential: an RSA key and a self-signed certificate for it, as `az ad app
// credential reset --create-cert` would make.
struct AppCertificate {
  PkeyPtr key;
  std::string pem;
  std::string der;
};

AppCertificate new_certificate(const std::string& common_name) {
  AppCertificate out;
  out.key.reset(EVP_RSA_gen(2048));
  std::unique_ptr<X509, X509Free> cert(X509_new());
  if (!out.key || !cert) {
    throw std::runtime_error("RSA key or certificate allocation failed");
  }
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_set_pubkey(cert.get(), out.key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);
  if (X509_sign(cert.get(), out.key.get(), EVP_sha256()) == 0) {
    throw std::runtime_error("X509_sign failed");
  }
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert.get());
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  out.pem.assign(data, static_cast<std::size_t>(size));
  const int der_size = i2d_X509(cert.get(), nullptr);
  out.der.resize(static_cast<std::size_t>(der_size));
  auto* p = reinterpret_cast<unsigned char*>(out.der.data());
  i2d_X509(cert.get(), &p);
  return out;
}

// RS256 (RFC 7518 §3.3): RSASSA-PKCS1-v1_5 with SHA-256.
std::string rs256(EVP_PKEY* key, std::string_view data) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::size_t size = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &size, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    throw std::runtime_error("EVP_DigestSign setup failed");
  }
  std::string signature(size, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    throw std::runtime_error("EVP_DigestSign failed");
  }
  signature.resize(size);
  return signature;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A compact JWS: base64url(header).base64url(claims).base64url(RS256 signature).
std::string signed_jwt(EVP_PKEY* key, const json& header, const json& claims) {
  const auto input =
      auth::base64url_encode(header.dump()) + "." + auth::base64url_encode(claims.dump());
  return input + "." + auth::base64url_encode(rs256(key, input));
}

json body_of(const HttpReply& reply) { return json::parse(reply.body); }

// The AADSTS number of an error answer (Microsoft's error_codes[0]), 0 when there is none.
int aadsts(const json& body) {
  return body.contains("error_codes") && !body["error_codes"].empty()
             ? body["error_codes"][0].get<int>()
             : 0;
}

json jwt_part(const std::string& jwt, std::size_t index) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (auto dot = jwt.find('.'); dot != std::string::npos; dot = jwt.find('.', start)) {
    parts.push_back(jwt.substr(start, dot - start));
    start = dot + 1;
  }
  parts.push_back(jwt.substr(start));
  if (parts.size() != 3) {
    throw std::invalid_argument("not a three-part JWT");
  }
  return json::parse(auth::base64url_decode(parts.at(index)).value());  // throws if malformed
}

class TokenEndpointFlowsTest : public ::testing::Test {
 protected:
  std::string authorize_url(const std::string& challenge, const std::string& state,
                            const std::string& login_hint, const std::string& scope = imap_scope,
                            const std::string& redirect = redirect_uri,
                            const std::string& method = "S256",
                            const std::string& client = client_id) const {
    const Fields fields{{"client_id", client},
                        {"response_type", "code"},
                        {"redirect_uri", redirect},
                        {"scope", scope},
                        {"state", state},
                        {"code_challenge", challenge},
                        {"code_challenge_method", method},
                        {"login_hint", login_hint},
                        {"nonce", "nonce-1"}};
    std::string url = peer_.authorize_url_base() + "?";
    for (const auto& [name, value] : fields) {
      url += (url.back() == '?' ? "" : "&") + auth::form_urlencode(name) + "=" +
             auth::form_urlencode(value);
    }
    return url;
  }

  // A sign-in as `login_hint` that must succeed: the code from the redirect.
  std::string sign_in(const std::string& verifier, const std::string& login_hint,
                      const std::string& scope = imap_scope) {
    const auto location =
        peer_.follow_authorize(authorize_url(challenge_of(verifier), "st", login_hint, scope));
    const auto params = query_params(location);
    if (!params.contains("code")) {
      throw std::runtime_error("no code in the redirect: " + location);
    }
    return params.at("code");
  }

  HttpReply redeem(const std::string& code, const std::string& verifier,
                   const std::string& redirect = redirect_uri) {
    return peer_.post_form(peer_.token_url(), {{"grant_type", "authorization_code"},
                                               {"client_id", client_id},
                                               {"code", code},
                                               {"redirect_uri", redirect},
                                               {"code_verifier", verifier}});
  }

  json device_code(const std::string& scope = imap_scope) {
    const auto reply =
        peer_.post_form(peer_.device_url(), {{"client_id", client_id}, {"scope", scope}});
    EXPECT_EQ(reply.status, 200) << reply.body;
    return body_of(reply);
  }

  HttpReply poll(const std::string& device_code, const std::string& client = client_id) {
    return peer_.post_form(
        peer_.token_url(),
        {{"grant_type", device_grant}, {"client_id", client}, {"device_code", device_code}});
  }

  // The error of a device poll that must fail.
  std::string poll_error(const std::string& device_code) {
    const auto reply = poll(device_code);
    EXPECT_EQ(reply.status, 400) << reply.body;
    return body_of(reply).value("error", "");
  }

  HttpReply client_credentials(const std::string& app, const Fields& credential,
                               const std::string& token_url = "",
                               const std::string& scope = app_scope) {
    Fields fields{{"grant_type", "client_credentials"}, {"client_id", app}, {"scope", scope}};
    fields.insert(fields.end(), credential.begin(), credential.end());
    return peer_.post_form(token_url.empty() ? peer_.token_url() : token_url, fields);
  }

  TokenEndpointPeer peer_;
};

TEST_F(TokenEndpointFlowsTest, AuthorizeRedirectsWithCodeAndStateAndPkceGuardsTheExchange) {
  const auto verifier = new_verifier();
  const auto location =
      peer_.follow_authorize(authorize_url(challenge_of(verifier), "state-42", alice));
  ASSERT_TRUE(location.starts_with(std::string(redirect_uri) + "?")) << location;
  auto params = query_params(location);
  EXPECT_EQ(params["state"], "state-42");
  ASSERT_FALSE(params["code"].empty()) << location;
  const auto code = params["code"];

  // A verifier that does not hash to the challenge is refused, and does not burn the code.
  const auto wrong = redeem(code, new_verifier());
  EXPECT_EQ(wrong.status, 400);
  EXPECT_EQ(body_of(wrong)["error"], "invalid_grant");
  EXPECT_EQ(aadsts(body_of(wrong)), 501481);
  // The redirect_uri must be the authorize request's (RFC 6749 §4.1.3).
  const auto other_redirect = redeem(code, verifier, "http://localhost:1/");
  EXPECT_EQ(other_redirect.status, 400);
  EXPECT_EQ(body_of(other_redirect)["error"], "invalid_grant");

  const auto ok = redeem(code, verifier);
  ASSERT_EQ(ok.status, 200) << ok.body;
  const auto tokens = body_of(ok);
  EXPECT_EQ(tokens["token_type"], "Bearer");
  EXPECT_EQ(tokens["scope"], imap_scope);
  EXPECT_EQ(tokens["expires_in"].get<int>(), 3599);
  ASSERT_TRUE(tokens.contains("refresh_token"));
  ASSERT_TRUE(tokens.contains("id_token"));
  EXPECT_EQ(peer_.introspect(tokens["access_token"].get<std::string>())["email"], alice);
  const auto check = peer_.check(tokens["refresh_token"].get<std::string>());
  EXPECT_TRUE(check["valid"].get<bool>());
  EXPECT_EQ(check["email"], alice);

  // Single use (RFC 6749 §4.1.2): Microsoft's AADSTS54005.
  const auto again = redeem(code, verifier);
  EXPECT_EQ(again.status, 400);
  EXPECT_EQ(body_of(again)["error"], "invalid_grant");
  EXPECT_EQ(aadsts(body_of(again)), 54005);
}

TEST_F(TokenEndpointFlowsTest, IdTokenIsAJwtNamingTheSignedInUser) {
  const auto verifier = new_verifier();
  const auto tokens = body_of(redeem(sign_in(verifier, alice), verifier));
  const auto id_token = tokens.at("id_token").get<std::string>();
  const auto header = jwt_part(id_token, 0);
  const auto claims = jwt_part(id_token, 1);
  EXPECT_EQ(header["typ"], "JWT");
  EXPECT_EQ(claims["aud"], client_id);
  EXPECT_EQ(claims["preferred_username"], alice);
  EXPECT_EQ(claims["email"], alice);
  EXPECT_EQ(claims["nonce"], "nonce-1");
  const auto tid = claims.at("tid").get<std::string>();
  EXPECT_EQ(claims["iss"], "https://login.microsoftonline.com/" + tid + "/v2.0");
  EXPECT_FALSE(claims.at("oid").get<std::string>().empty());
  EXPECT_FALSE(claims.at("name").get<std::string>().empty());
  EXPECT_LE(claims["nbf"].get<std::int64_t>(), unix_now());
  EXPECT_GT(claims["exp"].get<std::int64_t>(), unix_now());

  // As at Microsoft: no id_token without openid, no refresh token without offline_access.
  const auto bare_verifier = new_verifier();
  const auto bare = body_of(
      redeem(sign_in(bare_verifier, alice, "https://outlook.office.com/IMAP.AccessAsUser.All"),
             bare_verifier));
  EXPECT_TRUE(bare.contains("access_token"));
  EXPECT_FALSE(bare.contains("id_token"));
  EXPECT_FALSE(bare.contains("refresh_token"));

  // A refresh asking for openid gets an id_token for the same user.
  const auto refreshed = peer_.post_form(
      peer_.token_url(), {{"grant_type", "refresh_token"},
                          {"client_id", client_id},
                          {"refresh_token", tokens["refresh_token"].get<std::string>()},
                          {"scope", imap_scope}});
  ASSERT_EQ(refreshed.status, 200) << refreshed.body;
  EXPECT_EQ(jwt_part(body_of(refreshed).at("id_token").get<std::string>(), 1)["email"], alice);
}

TEST_F(TokenEndpointFlowsTest, SignInOverridesTheLoginHintForIdentityChecksAndSharedMailboxes) {
  // alice signs in for the shared mailbox: the id_token names alice, the access token opens
  // shared@ (what Dovecot's introspection sees), and so do its refreshes.
  peer_.set_signin(alice, "shared@example.com");
  const auto verifier = new_verifier();
  const auto tokens = body_of(redeem(sign_in(verifier, "shared@example.com"), verifier));
  EXPECT_EQ(jwt_part(tokens.at("id_token").get<std::string>(), 1)["preferred_username"], alice);
  EXPECT_EQ(peer_.introspect(tokens["access_token"].get<std::string>())["email"],
            "shared@example.com");
  const auto refresh_token = tokens["refresh_token"].get<std::string>();
  EXPECT_EQ(peer_.check(refresh_token)["mailbox"], "shared@example.com");
  const auto refreshed = peer_.post_form(peer_.token_url(), {{"grant_type", "refresh_token"},
                                                             {"client_id", client_id},
                                                             {"refresh_token", refresh_token}});
  ASSERT_EQ(refreshed.status, 200) << refreshed.body;
  EXPECT_EQ(peer_.introspect(body_of(refreshed)["access_token"].get<std::string>())["email"],
            "shared@example.com");

  // Back to the default: the login_hint signs in.
  peer_.set_signin("");
  const auto bob_verifier = new_verifier();
  const auto bob = body_of(redeem(sign_in(bob_verifier, "bob@example.com"), bob_verifier));
  EXPECT_EQ(jwt_part(bob.at("id_token").get<std::string>(), 1)["email"], "bob@example.com");
}

TEST_F(TokenEndpointFlowsTest, AuthorizeRefusesBadRequestsLikeMicrosoft) {
  const auto challenge = challenge_of(new_verifier());
  // A redirect URI that is not a loopback one: an error page, never a redirect.
  for (const std::string bad :
       {"https://evil.example/cb", "http://example.com:8080/", "http://localhost:53682/#frag"}) {
    const auto reply = peer_.authorize(authorize_url(challenge, "s", alice, imap_scope, bad));
    EXPECT_EQ(reply.status, 400) << bad;
    EXPECT_TRUE(reply.location.empty()) << bad;
    EXPECT_NE(reply.body.find("AADSTS50011"), std::string::npos) << reply.body;
  }
  EXPECT_THROW(peer_.follow_authorize(
                   authorize_url(challenge, "s", alice, imap_scope, "https://evil.example/")),
               std::runtime_error);
  // 127.0.0.1 is a loopback redirect too (RFC 8252 §7.3).
  EXPECT_EQ(peer_.authorize(authorize_url(challenge, "s", alice, imap_scope, "http://127.0.0.1:9/"))
                .status,
            302);

  // An unknown client goes back to the app with Microsoft's AADSTS700016.
  auto params = query_params(peer_.follow_authorize(
      authorize_url(challenge, "s-1", alice, imap_scope, redirect_uri, "S256", "nobody")));
  EXPECT_EQ(params["error"], "unauthorized_client");
  EXPECT_TRUE(params["error_description"].starts_with(
      "AADSTS700016: Application with identifier 'nobody' was not found"))
      << params["error_description"];
  EXPECT_EQ(params["state"], "s-1");
  EXPECT_FALSE(params.contains("code"));

  // PKCE is S256 only, and required.
  params = query_params(peer_.follow_authorize(
      authorize_url(challenge, "s", alice, imap_scope, redirect_uri, "plain")));
  EXPECT_EQ(params["error"], "invalid_request");
  params = query_params(peer_.follow_authorize(authorize_url("", "s", alice)));
  EXPECT_EQ(params["error"], "invalid_request");
  EXPECT_EQ(peer_.stats()["authorize"].get<int>(), 8);
}

TEST_F(TokenEndpointFlowsTest, ScriptedAuthorizeOutcomesAreConsumedOnce) {
  const auto challenge = challenge_of(new_verifier());
  peer_.set_authorize_outcome({{"error", "consent_required"}});
  auto params = query_params(peer_.follow_authorize(authorize_url(challenge, "s-2", alice)));
  EXPECT_EQ(params["error"], "consent_required");
  EXPECT_TRUE(params["error_description"].starts_with("AADSTS65001: "))
      << params["error_description"];
  EXPECT_EQ(params["state"], "s-2");

  peer_.set_authorize_outcome({{"error", "access_denied"}});
  params = query_params(peer_.follow_authorize(authorize_url(challenge, "s", alice)));
  EXPECT_EQ(params["error"], "access_denied");
  EXPECT_TRUE(params["error_description"].starts_with("AADSTS65004: "));

  peer_.set_authorize_outcome({{"error", "invalid_request"}, {"code", 50020}});
  params = query_params(peer_.follow_authorize(authorize_url(challenge, "s", alice)));
  EXPECT_TRUE(params["error_description"].starts_with("AADSTS50020: User account 'alice@"))
      << params["error_description"];

  // Consumed: the next sign-in succeeds.
  params = query_params(peer_.follow_authorize(authorize_url(challenge, "s-3", alice)));
  EXPECT_FALSE(params["code"].empty());
  EXPECT_EQ(params["state"], "s-3");

  // A forged state, for the program's state check.
  peer_.set_authorize_outcome({{"state", "forged"}});
  params = query_params(peer_.follow_authorize(authorize_url(challenge, "s-4", alice)));
  EXPECT_FALSE(params["code"].empty());
  EXPECT_EQ(params["state"], "forged");

  EXPECT_THROW(peer_.set_authorize_outcome(json::object()), std::runtime_error);
}

TEST_F(TokenEndpointFlowsTest, IdTokenFaultsAreConsumedOnce) {
  peer_.set_id_token_fault("not_a_jwt");
  auto verifier = new_verifier();
  auto tokens = body_of(redeem(sign_in(verifier, alice), verifier));
  EXPECT_EQ(tokens["id_token"], "not_a_jwt");

  peer_.set_id_token_fault("no_identity");
  verifier = new_verifier();
  tokens = body_of(redeem(sign_in(verifier, alice), verifier));
  const auto claims = jwt_part(tokens["id_token"].get<std::string>(), 1);
  EXPECT_FALSE(claims.contains("preferred_username"));
  EXPECT_FALSE(claims.contains("email"));

  peer_.set_id_token_fault("bad_payload");
  verifier = new_verifier();
  tokens = body_of(redeem(sign_in(verifier, alice), verifier));
  EXPECT_THROW(jwt_part(tokens["id_token"].get<std::string>(), 1), json::parse_error);

  verifier = new_verifier();
  tokens = body_of(redeem(sign_in(verifier, alice), verifier));
  EXPECT_EQ(jwt_part(tokens["id_token"].get<std::string>(), 1)["email"], alice);
  EXPECT_THROW(peer_.set_id_token_fault("sideways"), std::runtime_error);
}

TEST_F(TokenEndpointFlowsTest, DeviceFlowFollowsItsScriptAndRecordsEveryPoll) {
  peer_.set_signin(alice);
  peer_.set_device_script(
      {{"steps", json::array({"pending", "pending", "slow_down", "ok"})}, {"interval", 1}});
  const auto answer = device_code();
  const auto user_code = answer.at("user_code").get<std::string>();
  const auto verification_uri = answer.at("verification_uri").get<std::string>();
  EXPECT_EQ(verification_uri, peer_.base_url() + "/devicelogin");
  EXPECT_EQ(answer["interval"].get<int>(), 1);
  EXPECT_EQ(answer["expires_in"].get<int>(), 900);
  EXPECT_EQ(answer["message"], "To sign in, use a web browser to open the page " +
                                   verification_uri + " and enter the code " + user_code +
                                   " to authenticate.");
  const auto code = answer.at("device_code").get<std::string>();

  auto reply = poll(code);
  EXPECT_EQ(body_of(reply)["error"], "authorization_pending");
  EXPECT_EQ(aadsts(body_of(reply)), 70016);
  EXPECT_EQ(poll_error(code), "authorization_pending");
  EXPECT_EQ(poll_error(code), "slow_down");
  reply = poll(code);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const auto tokens = body_of(reply);
  EXPECT_TRUE(tokens.contains("refresh_token"));
  EXPECT_EQ(jwt_part(tokens.at("id_token").get<std::string>(), 1)["email"], alice);
  EXPECT_EQ(peer_.introspect(tokens["access_token"].get<std::string>())["email"], alice);
  // Redeemed: the device code gives nothing more.
  reply = poll(code);
  EXPECT_EQ(body_of(reply)["error"], "invalid_grant");
  EXPECT_EQ(aadsts(body_of(reply)), 54005);

  // Each poll's arrival and the interval in force after it: slow_down adds 5 s for this and
  // every later request (RFC 8628 §3.5), which the CLI's test measures against "t".
  const auto polls = peer_.device_polls();
  ASSERT_EQ(polls.size(), 5u) << polls.dump();
  const std::vector<std::string> results{"authorization_pending", "authorization_pending",
                                         "slow_down", "ok", "invalid_grant"};
  const std::vector<int> intervals{1, 1, 6, 6, 6};
  for (std::size_t i = 0; i < polls.size(); ++i) {
    EXPECT_EQ(polls[i]["result"], results[i]) << i;
    EXPECT_EQ(polls[i]["interval"].get<int>(), intervals[i]) << i;
    if (i > 0) {
      EXPECT_GE(polls[i]["t"].get<double>(), polls[i - 1]["t"].get<double>());
    }
  }
  EXPECT_EQ(peer_.stats()["per_grant"][device_grant].get<int>(), 5);
  EXPECT_EQ(peer_.stats()["devicecode"].get<int>(), 1);
}

TEST_F(TokenEndpointFlowsTest, DeviceScriptEndingsExpiryAndMissingFields) {
  peer_.add_account(alice);  // the default sign-in: the account added last

  peer_.set_device_script(
      {{"steps", json::array({"declined"})}, {"missing", json::array({"user_code", "interval"})}});
  auto answer = device_code();
  EXPECT_FALSE(answer.contains("user_code"));
  EXPECT_FALSE(answer.contains("interval"));
  EXPECT_TRUE(answer.contains("verification_uri"));
  auto code = answer.at("device_code").get<std::string>();
  EXPECT_EQ(poll_error(code), "authorization_declined");
  EXPECT_EQ(poll_error(code), "authorization_declined") << "a terminal answer repeats";

  peer_.set_device_script({{"steps", json::array({"pending", "expired"})}});
  code = device_code().at("device_code").get<std::string>();
  EXPECT_EQ(poll_error(code), "authorization_pending");
  const auto expired = poll(code);
  EXPECT_EQ(body_of(expired)["error"], "expired_token");
  EXPECT_EQ(aadsts(body_of(expired)), 70020);

  peer_.set_device_script({{"steps", json::array({"access_denied"})}});
  EXPECT_EQ(poll_error(device_code().at("device_code").get<std::string>()), "access_denied");

  peer_.set_device_script({{"steps", json::array({"pending", "bad_code"})}});
  code = device_code().at("device_code").get<std::string>();
  EXPECT_EQ(poll_error(code), "authorization_pending");
  EXPECT_EQ(poll_error(code), "bad_verification_code");
  EXPECT_EQ(poll_error(code), "bad_verification_code");

  // A device code past expires_in is expired whatever the script says.
  peer_.set_device_script({{"expires_in", 0}});
  EXPECT_EQ(poll_error(device_code().at("device_code").get<std::string>()), "expired_token");

  // The default script: one pending, then tokens for the account added last.
  peer_.set_device_script(json::object());
  answer = device_code();
  EXPECT_EQ(answer["interval"].get<int>(), 5);
  code = answer.at("device_code").get<std::string>();
  EXPECT_EQ(poll_error(code), "authorization_pending");
  const auto ok = poll(code);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(peer_.introspect(body_of(ok)["access_token"].get<std::string>())["email"], alice);

  // Unknown codes, another client's code, and bad scripts.
  EXPECT_EQ(poll_error("DAQ.nonsense"), "bad_verification_code");
  EXPECT_EQ(body_of(poll(device_code().at("device_code").get<std::string>(), "nobody"))["error"],
            "unauthorized_client");
  EXPECT_THROW(peer_.set_device_script({{"steps", json::array({"maybe"})}}), std::runtime_error);
  EXPECT_THROW(peer_.set_device_script({{"missing", json::array({"colour"})}}), std::runtime_error);
}

TEST_F(TokenEndpointFlowsTest, ClientCredentialsWithASecret) {
  peer_.register_app(
      {{"client_id", "app-1"}, {"client_secret", "s3cret"}, {"mailbox", "reports@example.com"}});
  const auto ok = client_credentials("app-1", {{"client_secret", "s3cret"}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  const auto tokens = body_of(ok);
  EXPECT_FALSE(tokens.contains("refresh_token")) << "RFC 6749 §4.4.3";
  EXPECT_FALSE(tokens.contains("id_token"));
  EXPECT_EQ(tokens["expires_in"].get<int>(), 3599);
  const auto introspected = peer_.introspect(tokens["access_token"].get<std::string>());
  EXPECT_TRUE(introspected["active"].get<bool>());
  EXPECT_EQ(introspected["email"], "reports@example.com");

  auto reply = client_credentials("app-1", {{"client_secret", "wrong"}});
  EXPECT_EQ(reply.status, 401);
  EXPECT_EQ(body_of(reply)["error"], "invalid_client");
  EXPECT_EQ(aadsts(body_of(reply)), 7000215);
  reply = client_credentials("app-1", {});
  EXPECT_EQ(reply.status, 401);
  EXPECT_EQ(aadsts(body_of(reply)), 7000218);
  reply = client_credentials("app-2", {{"client_secret", "s3cret"}});
  EXPECT_EQ(body_of(reply)["error"], "unauthorized_client");
  EXPECT_EQ(aadsts(body_of(reply)), 700016);
  reply = client_credentials("app-1", {{"client_secret", "s3cret"}}, "",
                             "https://outlook.office365.com/IMAP.AccessAsApp");
  EXPECT_EQ(body_of(reply)["error"], "invalid_scope");
  EXPECT_EQ(peer_.stats()["per_grant"]["client_credentials"].get<int>(), 5);
  EXPECT_EQ(peer_.stats()["per_account"]["reports@example.com"].get<int>(), 4);

  EXPECT_THROW(peer_.register_app({{"client_id", "app-3"}, {"mailbox", "x@example.com"}}),
               std::runtime_error);
}

TEST_F(TokenEndpointFlowsTest, ClientCredentialsWithACertificateAssertion) {
  const auto cert = new_certificate("app-cert");
  const auto registered = peer_.register_app(
      {{"client_id", "app-cert"}, {"certificate_pem", cert.pem}, {"mailbox", "box@example.com"}});
  const auto x5t = auth::base64url_encode(sha256(cert.der));
  EXPECT_EQ(registered["x5t#S256"], x5t);

  const json header{{"alg", "RS256"}, {"typ", "JWT"}, {"x5t#S256", x5t}};
  const auto claims = [&](const std::string& jti) {
    const auto now = unix_now();
    return json{{"aud", peer_.token_url()},
                {"iss", "app-cert"},
                {"sub", "app-cert"},
                {"jti", jti},
                {"nbf", now},
                {"exp", now + 600}};
  };
  const auto with_assertion = [&](const std::string& assertion, const std::string& url = "") {
    return client_credentials(
        "app-cert", {{"client_assertion_type", jwt_bearer}, {"client_assertion", assertion}}, url);
  };

  const auto ok = with_assertion(signed_jwt(cert.key.get(), header, claims("jti-1")));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_FALSE(body_of(ok).contains("refresh_token"));
  EXPECT_EQ(peer_.introspect(body_of(ok)["access_token"].get<std::string>())["email"],
            "box@example.com");

  // aud is the token URL the request hit, tenant segment included.
  auto tenant_claims = claims("jti-2");
  tenant_claims["aud"] = peer_.token_url("contoso.example");
  EXPECT_EQ(with_assertion(signed_jwt(cert.key.get(), header, tenant_claims),
                           peer_.token_url("contoso.example"))
                .status,
            200);

  const auto refused = [&](const std::string& assertion) {
    const auto reply = with_assertion(assertion);
    EXPECT_EQ(reply.status, 401) << reply.body;
    EXPECT_EQ(body_of(reply)["error"], "invalid_client") << reply.body;
    return aadsts(body_of(reply));
  };
  // Replayed jti, wrong audience, outside the time range, wrong issuer.
  EXPECT_EQ(refused(signed_jwt(cert.key.get(), header, claims("jti-1"))), 50013);
  auto c = claims("jti-3");
  c["aud"] = peer_.token_url("other");
  EXPECT_EQ(refused(signed_jwt(cert.key.get(), header, c)), 50013);
  c = claims("jti-4");
  c["exp"] = unix_now() - 10;
  EXPECT_EQ(refused(signed_jwt(cert.key.get(), header, c)), 700024);
  c = claims("jti-5");
  c["nbf"] = unix_now() + 600;
  EXPECT_EQ(refused(signed_jwt(cert.key.get(), header, c)), 700024);
  c = claims("jti-6");
  c["iss"] = "someone-else";
  EXPECT_EQ(refused(signed_jwt(cert.key.get(), header, c)), 700021);
  c = claims("jti-7");
  c.erase("jti");
  EXPECT_EQ(refused(signed_jwt(cert.key.get(), header, c)), 50013);

  // Signed by another key; another certificate's thumbprint; not RS256; not a JWT.
  const auto other = new_certificate("intruder");
  EXPECT_EQ(refused(signed_jwt(other.key.get(), header, claims("jti-8"))), 700027);
  auto other_header = header;
  other_header["x5t#S256"] = auth::base64url_encode(sha256(other.der));
  EXPECT_EQ(refused(signed_jwt(other.key.get(), other_header, claims("jti-9"))), 700027);
  auto hs_header = header;
  hs_header["alg"] = "HS256";
  EXPECT_EQ(refused(signed_jwt(cert.key.get(), hs_header, claims("jti-10"))), 700027);
  EXPECT_EQ(refused("not.a.jwt!"), 50027);
}

TEST_F(TokenEndpointFlowsTest, StatsCountEachGrantType) {
  const auto refresh_token = peer_.add_account(alice);
  peer_.register_app({{"client_id", "app-1"}, {"client_secret", "x"}, {"mailbox", alice}});
  peer_.reset_stats();

  ASSERT_EQ(peer_
                .post_form(peer_.token_url(), {{"grant_type", "refresh_token"},
                                               {"client_id", client_id},
                                               {"refresh_token", refresh_token}})
                .status,
            200);
  const auto verifier = new_verifier();
  ASSERT_EQ(redeem(sign_in(verifier, alice), verifier).status, 200);
  peer_.set_device_script({{"steps", json::array({"ok"})}});
  ASSERT_EQ(poll(device_code().at("device_code").get<std::string>()).status, 200);
  ASSERT_EQ(client_credentials("app-1", {{"client_secret", "x"}}).status, 200);

  const auto stats = peer_.stats();
  EXPECT_EQ(stats["total"].get<int>(), 4);
  EXPECT_EQ(stats["per_account"][alice].get<int>(), 4);
  EXPECT_EQ(stats["per_grant"]["refresh_token"].get<int>(), 1);
  EXPECT_EQ(stats["per_grant"]["authorization_code"].get<int>(), 1);
  EXPECT_EQ(stats["per_grant"][device_grant].get<int>(), 1);
  EXPECT_EQ(stats["per_grant"]["client_credentials"].get<int>(), 1);
  EXPECT_EQ(stats["authorize"].get<int>(), 1);
  EXPECT_EQ(stats["devicecode"].get<int>(), 1);
  EXPECT_EQ(stats["max_in_flight"].get<int>(), 1);
}

}  // namespace
}  // namespace iop::test
