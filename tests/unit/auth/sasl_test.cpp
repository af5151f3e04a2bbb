#include "auth/sasl.hpp"

#include <gtest/gtest.h>

#include <string>
#include <variant>

#include "auth/base64.hpp"

namespace iop::auth {
namespace {

using namespace std::string_literals;

TEST(XOAuth2, KnownVector) {
  // Google's XOAUTH2 documentation example: user someuser@example.com, token
  // ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg.
  const Secret token("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
  EXPECT_EQ(
      xoauth2_initial_response("someuser@example.com", token).reveal(),
      "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhk"
      "SFJoZG1semRHRXVZMjl0Q2cBAQ==");
}

TEST(XOAuth2, DecodesToTheDocumentedLayout) {
  const Secret token("t0k3n");
  const auto encoded = xoauth2_initial_response("alice@example.com", token);
  const auto raw = auth::base64_decode(encoded.reveal());
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ(*raw,
            "user=alice@example.com\x01"
            "auth=Bearer t0k3n\x01\x01");
}

TEST(XOAuth2, RefusesSeparatorInInputs) {
  EXPECT_TRUE(xoauth2_initial_response("a\x01"
                                       "b",
                                       Secret("t"))
                  .empty());
  EXPECT_TRUE(xoauth2_initial_response("a", Secret("t\x01"
                                                   "x"))
                  .empty());
}

TEST(SaslPlain, EmptyAuthzid) {
  // RFC 4616 §4 example: "\0tim\0tanstaaftanstaaf".
  const auto creds = decode_plain("AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
  ASSERT_TRUE(creds.has_value());
  EXPECT_EQ(creds->authzid, "");
  EXPECT_EQ(creds->authcid, "tim");
  EXPECT_EQ(creds->password.reveal(), "tanstaaftanstaaf");
}

TEST(SaslPlain, AuthzidEqualToAuthcid) {
  const auto creds = decode_plain(auth::base64_encode("Ursel\0Ursel\0pw"s));
  ASSERT_TRUE(creds.has_value());
  EXPECT_EQ(creds->authzid, "Ursel");
  EXPECT_EQ(creds->authcid, "Ursel");
  EXPECT_EQ(creds->password.reveal(), "pw");
  // The same e-mail address in another case is the same user.
  EXPECT_TRUE(decode_plain(auth::base64_encode("Alice@Example.com\0alice@example.com\0pw"s)));
}

TEST(SaslPlain, MismatchingAuthzidRejected) {
  // RFC 4616 §4 example: "Ursel\0Kurt\0xipj3plmq" asks to act as Ursel with Kurt's password.
  EXPECT_FALSE(decode_plain("VXJzZWwAS3VydAB4aXBqM3BsbXE=").has_value());
  const auto parsed = parse_plain("Ursel\0Kurt\0xipj3plmq"s);
  ASSERT_TRUE(std::holds_alternative<PlainError>(parsed));
  EXPECT_EQ(std::get<PlainError>(parsed), PlainError::authzid_mismatch);
}

TEST(SaslPlain, RoundTrips) {
  for (const auto& [authzid, authcid, password] :
       {std::tuple{""s, "alice@example.com"s, "correct horse"s},
        std::tuple{"bob"s, "bob"s, "p\xc3\xa4ss"s},
        std::tuple{""s, "x"s, std::string(1024, 'p')}}) {
    const auto creds =
        decode_plain(auth::base64_encode(authzid + '\0' + authcid + '\0' + password));
    ASSERT_TRUE(creds.has_value()) << authcid;
    EXPECT_EQ(creds->authzid, authzid);
    EXPECT_EQ(creds->authcid, authcid);
    EXPECT_EQ(creds->password.reveal(), password);
  }
}

struct MalformedCase {
  const char* name;
  std::string message;
};

class SaslPlainMalformed : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(SaslPlainMalformed, Rejected) {
  const auto parsed = parse_plain(GetParam().message);
  ASSERT_TRUE(std::holds_alternative<PlainError>(parsed));
  EXPECT_EQ(std::get<PlainError>(parsed), PlainError::malformed);
  EXPECT_FALSE(decode_plain(auth::base64_encode(GetParam().message)).has_value());
}

INSTANTIATE_TEST_SUITE_P(
    Rfc4616, SaslPlainMalformed,
    ::testing::Values(MalformedCase{"Empty", ""s}, MalformedCase{"NoNul", "alicepw"s},
                      MalformedCase{"OneNul", "alice\0pw"s},
                      MalformedCase{"ThreeNuls", "\0alice\0p\0w"s},
                      MalformedCase{"EmptyAuthcid", "\0\0pw"s},
                      MalformedCase{"EmptyPassword", "\0alice\0"s},
                      MalformedCase{"LongAuthcid", "\0"s + std::string(1025, 'a') + "\0pw"s},
                      MalformedCase{"LongPassword", "\0a\0"s + std::string(1025, 'p')},
                      MalformedCase{"LongAuthzid", std::string(1025, 'a') + "\0a\0pw"s}),
    [](const ::testing::TestParamInfo<MalformedCase>& param_info) {
      return std::string(param_info.param.name);
    });

TEST(SaslPlain, BadBase64Rejected) {
  EXPECT_FALSE(decode_plain("AHRpbQB0YW5zdGFhZnRhbnN0YWFm=").has_value());
  EXPECT_FALSE(decode_plain("AHRpbQB0 YW5zdGFhZnRhbnN0YWFm").has_value());
  EXPECT_FALSE(decode_plain("!!!!").has_value());
  EXPECT_FALSE(decode_plain("").has_value());
}

}  // namespace
}  // namespace iop::auth
