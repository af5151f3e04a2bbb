#include "auth/id_token.hpp"

#include <gtest/gtest.h>

#include <string>

#include "auth/base64.hpp"

namespace iop::auth {
namespace {

std::string jwt_with(std::string_view payload_json) {
  return base64url_encode(R"({"alg":"RS256","typ":"JWT","kid":"k1"})") + "." +
         base64url_encode(payload_json) + ".c2lnbmF0dXJl";
}

TEST(IdToken, DecodesMicrosoftClaims) {
  const auto claims = decode_id_token(
      jwt_with(R"({"aud":"client","iss":"https://login.microsoftonline.com/tid-1/v2.0","iat":1,)"
               R"("name":"Alice Émile","preferred_username":"Alice@Contoso.com","tid":"tid-1",)"
               R"("oid":"x","ver":"2.0"})"));
  ASSERT_TRUE(claims) << claims.error().message;
  EXPECT_EQ(claims->preferred_username, "Alice@Contoso.com");
  EXPECT_EQ(claims->tid, "tid-1");
  EXPECT_EQ(claims->iss, "https://login.microsoftonline.com/tid-1/v2.0");
  EXPECT_EQ(claims->name, "Alice Émile");
  EXPECT_TRUE(claims->email.empty());
  EXPECT_TRUE(claims->upn.empty());
  EXPECT_EQ(identity_candidates(*claims), std::vector<std::string>{"Alice@Contoso.com"});
  EXPECT_TRUE(identity_matches(*claims, "alice@contoso.COM"));
  EXPECT_FALSE(identity_matches(*claims, "bob@contoso.com"));
  EXPECT_FALSE(identity_matches(*claims, "not an address"));
}

TEST(IdToken, DecodesGoogleClaimsWithoutSignature) {
  // An empty signature part still splits into three parts.
  const auto jwt =
      base64url_encode(R"({"alg":"none"})") + "." +
      base64url_encode(R"({"iss":"https://accounts.google.com","email":"bob@gmail.com",)"
                       R"("email_verified":true})") +
      ".";
  const auto claims = decode_id_token(jwt);
  ASSERT_TRUE(claims) << claims.error().message;
  EXPECT_EQ(claims->email, "bob@gmail.com");
  EXPECT_EQ(claims->email_verified, true);
  EXPECT_TRUE(identity_matches(*claims, "Bob@Gmail.com"));
}

TEST(IdToken, CandidatesInOrderWithoutRepeats) {
  IdentityClaims c;
  c.preferred_username = "A@x.com";
  c.email = "a@X.com";
  c.upn = "alias@x.com";
  EXPECT_EQ(identity_candidates(c), (std::vector<std::string>{"A@x.com", "alias@x.com"}));
  EXPECT_TRUE(identity_matches(c, "ALIAS@x.com"));
  c.preferred_username.clear();
  EXPECT_EQ(identity_candidates(c), (std::vector<std::string>{"a@X.com", "alias@x.com"}));
}

TEST(IdToken, UnverifiedEmailDoesNotMatch) {
  IdentityClaims c;
  c.email = "victim@contoso.com";
  c.email_verified = false;
  EXPECT_TRUE(identity_candidates(c).empty());
  EXPECT_FALSE(identity_matches(c, "victim@contoso.com"));
}

TEST(IdToken, ClaimsWithControlCharactersOrWrongTypesAreAbsent) {
  const auto claims = decode_id_token(
      jwt_with(R"({"preferred_username":"evil\u001b[2Kx@y.com","email":42,"upn":"u@y.com"})"));
  ASSERT_TRUE(claims);
  EXPECT_TRUE(claims->preferred_username.empty());
  EXPECT_TRUE(claims->email.empty());
  EXPECT_EQ(identity_candidates(*claims), std::vector<std::string>{"u@y.com"});
}

TEST(IdToken, PaddedBase64urlPayloadIsRejected) {
  // base64url in JWS has no padding (RFC 7515 §2).
  const auto jwt = "eyJhIjoxfQ." + base64_encode(R"({"a":1})") + ".sig";
  EXPECT_FALSE(decode_id_token(jwt));
}

struct BadJwt {
  const char* name;
  std::string jwt;
  std::string message;
};

class IdTokenErrors : public ::testing::TestWithParam<BadJwt> {};

TEST_P(IdTokenErrors, ClearOneLineError) {
  const auto got = decode_id_token(GetParam().jwt);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Errc::endpoint_bad_response);
  EXPECT_EQ(got.error().message, GetParam().message);
}

const std::string not_jwt =
    "the id_token is not a JWT (expected three dot-separated base64url parts)";
INSTANTIATE_TEST_SUITE_P(
    Table, IdTokenErrors,
    ::testing::Values(BadJwt{"empty", "", not_jwt}, BadJwt{"opaque_token", "abcdef", not_jwt},
                      BadJwt{"two_parts", "eyJ9.eyJ9", not_jwt},
                      BadJwt{"four_parts", "a.b.c.d", not_jwt},
                      BadJwt{"jwe_five_parts", "a.b.c.d.e", not_jwt},
                      BadJwt{"empty_payload", "eyJhIjoxfQ..sig", not_jwt},
                      BadJwt{"bad_base64", "eyJhIjoxfQ.e*J9.sig",
                             "the id_token's payload is not valid base64url"},
                      BadJwt{"lone_sextet", "eyJhIjoxfQ.eyJhI.sig",
                             "the id_token's payload is not valid base64url"},
                      BadJwt{"not_json", "eyJhIjoxfQ." + base64url_encode("hello") + ".sig",
                             "the id_token's payload is not a JSON object"},
                      BadJwt{"json_array", "eyJhIjoxfQ." + base64url_encode("[1,2]") + ".sig",
                             "the id_token's payload is not a JSON object"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(IdToken, NeverCrashesOnPrefixes) {
  const auto jwt = jwt_with(R"({"preferred_username":"a@b.com","email":"a@b.com"})");
  for (std::size_t n = 0; n <= jwt.size(); ++n) {
    (void)decode_id_token(jwt.substr(0, n));
    (void)decode_id_token(jwt.substr(n));
  }
}

}  // namespace
}  // namespace iop::auth
