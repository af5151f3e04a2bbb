#include "auth/token_response.hpp"

#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "common/json_wipe.hpp"

namespace iop::auth {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

// Tokens the tests look for in every explanation and message: none may ever appear.
constexpr const char* access_value = "at.Zx9-secretACCESS_value";
constexpr const char* refresh_value = "rt.Qw8-secretREFRESH_value";

json success_body() {
  return {{"token_type", "Bearer"},
          {"scope", "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"},
          {"expires_in", 3599},
          {"ext_expires_in", 3599},
          {"access_token", access_value},
          {"refresh_token", refresh_value}};
}

// A Microsoft-shaped error body.
json ms_error(const std::string& error, int code) {
  return {{"error", error},
          {"error_description", "AADSTS" + std::to_string(code) +
                                    ": Something happened.\r\nTrace ID: "
                                    "0b3c4d5e-0000-1111-2222-333344445555\r\nCorrelation ID: "
                                    "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff\r\nTimestamp: "
                                    "2024-01-01 00:00:00Z"},
          {"error_codes", {code}},
          {"timestamp", "2024-01-01 00:00:00Z"},
          {"trace_id", "0b3c4d5e-0000-1111-2222-333344445555"},
          {"correlation_id", "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"},
          {"error_uri", "https://login.microsoftonline.com/error?code=" + std::to_string(code)}};
}

void expect_no_secret(const TokenError& e, const std::string& context) {
  const Error error = to_error(e);
  for (const std::string& text : {e.explanation, error.message, e.error}) {
    EXPECT_EQ(text.find(access_value), std::string::npos) << context << ": " << text;
    EXPECT_EQ(text.find(refresh_value), std::string::npos) << context << ": " << text;
    EXPECT_EQ(text.find("secretACCESS"), std::string::npos) << context << ": " << text;
    EXPECT_EQ(text.find("secretREFRESH"), std::string::npos) << context << ": " << text;
  }
}

// ---- success

struct SuccessCase {
  const char* name;
  json body;
  std::chrono::seconds expires_in;
  bool has_refresh;
};

class TokenResponseSuccess : public ::testing::TestWithParam<SuccessCase> {};

TEST_P(TokenResponseSuccess, Parses) {
  const auto& c = GetParam();
  const auto r = parse_token_response(200, c.body.dump(), std::nullopt);
  ASSERT_TRUE(r.has_value()) << c.name << ": " << r.error().explanation;
  EXPECT_EQ(r->access_token.reveal(), access_value);
  EXPECT_EQ(r->expires_in, c.expires_in);
  EXPECT_EQ(r->refresh_token.has_value(), c.has_refresh);
  if (c.has_refresh) {
    EXPECT_EQ(r->refresh_token->reveal(), refresh_value);
  }
}

json with(json body, const std::string& key, json value) {
  body[key] = std::move(value);
  return body;
}

json without(json body, const std::string& key) {
  body.erase(key);
  return body;
}

INSTANTIATE_TEST_SUITE_P(
    Variants, TokenResponseSuccess,
    ::testing::Values(
        SuccessCase{"microsoft", success_body(), 3599s, true},
        SuccessCase{"lowercase_bearer", with(success_body(), "token_type", "bearer"), 3599s, true},
        SuccessCase{"upper_bearer", with(success_body(), "token_type", "BEARER"), 3599s, true},
        SuccessCase{"no_token_type", without(success_body(), "token_type"), 3599s, true},
        SuccessCase{"no_refresh_token", without(success_body(), "refresh_token"), 3599s, false},
        SuccessCase{"null_refresh_token", with(success_body(), "refresh_token", nullptr), 3599s,
                    false},
        SuccessCase{"expires_in_string", with(success_body(), "expires_in", "3600"), 3600s, true},
        SuccessCase{"expires_in_one_second", with(success_body(), "expires_in", 1), 1s, true},
        SuccessCase{"expires_in_one_day", with(success_body(), "expires_in", 86400), 86400s, true},
        SuccessCase{"no_scope", without(success_body(), "scope"), 3599s, true},
        SuccessCase{"extra_members", with(success_body(), "id_token", "eyJ.x.y"), 3599s, true}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(TokenResponse, KeepsTheScope) {
  const auto r = parse_token_response(200, success_body().dump(), std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->scope, "https://outlook.office.com/IMAP.AccessAsUser.All offline_access");
}

// ---- unusable answers

struct BadCase {
  const char* name;
  int status;
  std::string body;
};

class TokenResponseBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(TokenResponseBad, IsATypedBadResponse) {
  const auto& c = GetParam();
  const auto r = parse_token_response(c.status, c.body, std::nullopt);
  ASSERT_FALSE(r.has_value()) << c.name;
  EXPECT_EQ(r.error().kind, GrantFailure::bad_response) << c.name << ": " << r.error().explanation;
  EXPECT_EQ(r.error().http_status, c.status);
  EXPECT_FALSE(r.error().explanation.empty());
  EXPECT_EQ(to_error(r.error()).code, Errc::endpoint_bad_response);
  expect_no_secret(r.error(), c.name);
}

std::string dump(const json& j) { return j.dump(); }

INSTANTIATE_TEST_SUITE_P(
    Inputs, TokenResponseBad,
    ::testing::Values(
        BadCase{"empty_body", 200, ""},
        BadCase{"malformed_json", 200,
                std::string(R"({"token_type":"Bearer","access_token":")") + access_value},
        BadCase{"html", 200, "<html>hello</html>"}, BadCase{"json_array", 200, "[1,2,3]"},
        BadCase{"json_string", 200, "\"at.x\""},
        BadCase{"no_access_token", 200, dump(without(success_body(), "access_token"))},
        BadCase{"empty_access_token", 200, dump(with(success_body(), "access_token", ""))},
        BadCase{"numeric_access_token", 200, dump(with(success_body(), "access_token", 42))},
        BadCase{"access_token_with_space", 200,
                dump(with(success_body(), "access_token", "at.a b"))},
        BadCase{"access_token_with_newline", 200,
                dump(with(success_body(), "access_token", std::string(access_value) + "\n"))},
        BadCase{"access_token_non_ascii", 200,
                dump(with(success_body(), "access_token", "at.\xc3\xa9"))},
        BadCase{"access_token_too_long", 200,
                dump(with(success_body(), "access_token", std::string(16 * 1024 + 1, 'a')))},
        BadCase{"token_type_mac", 200, dump(with(success_body(), "token_type", "mac"))},
        BadCase{"token_type_number", 200, dump(with(success_body(), "token_type", 1))},
        BadCase{"expires_in_missing", 200, dump(without(success_body(), "expires_in"))},
        BadCase{"expires_in_zero", 200, dump(with(success_body(), "expires_in", 0))},
        BadCase{"expires_in_negative", 200, dump(with(success_body(), "expires_in", -5))},
        BadCase{"expires_in_absurd", 200, dump(with(success_body(), "expires_in", 86401))},
        BadCase{"expires_in_huge_unsigned", 200,
                dump(with(success_body(), "expires_in", 18446744073709551615ull))},
        BadCase{"expires_in_float", 200, dump(with(success_body(), "expires_in", 1e12))},
        BadCase{"expires_in_fraction", 200, dump(with(success_body(), "expires_in", 3599.5))},
        BadCase{"expires_in_garbage_string", 200, dump(with(success_body(), "expires_in", "soon"))},
        BadCase{"expires_in_negative_string", 200, dump(with(success_body(), "expires_in", "-60"))},
        BadCase{"expires_in_null", 200, dump(with(success_body(), "expires_in", nullptr))},
        BadCase{"expires_in_bool", 200, dump(with(success_body(), "expires_in", true))},
        BadCase{"refresh_token_control_char", 200,
                dump(with(success_body(), "refresh_token", std::string(refresh_value) + "\x01"))},
        BadCase{"refresh_token_crlf", 200,
                dump(with(success_body(), "refresh_token", "rt.a\r\nX-Injected: 1"))},
        BadCase{"refresh_token_empty", 200, dump(with(success_body(), "refresh_token", ""))},
        BadCase{"refresh_token_object", 200,
                dump(with(success_body(), "refresh_token", json::object()))},
        BadCase{"error_in_http_200", 200, dump(ms_error("invalid_grant", 70008))},
        BadCase{"redirect", 302, ""}, BadCase{"created", 201, dump(success_body())},
        BadCase{"400_not_json", 400, "Bad Request"},
        BadCase{"400_json_without_error", 400, dump(success_body())},
        BadCase{"400_error_is_a_token", 400, dump(json{{"error", refresh_value}})},
        BadCase{"401_empty", 401, ""}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(TokenResponse, ErrorIn200KeepsTheFieldsButEndsNoAccount) {
  const auto r = parse_token_response(200, ms_error("invalid_grant", 70008).dump(), std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, GrantFailure::bad_response);
  EXPECT_EQ(r.error().error, "invalid_grant");
  EXPECT_EQ(r.error().aadsts, 70008);
}

// ---- OAuth errors and their classification

struct ErrorCase {
  const char* name;
  int status;
  std::string error;
  int code;
  GrantFailure kind;
  Errc errc;
};

class TokenResponseError : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(TokenResponseError, IsClassified) {
  const auto& c = GetParam();
  json body = ms_error(c.error, c.code);
  // The description may echo what was sent; a careless endpoint could even echo a token.
  body["error_description"] = body["error_description"].get<std::string>() + " token " +
                              refresh_value + " / " + access_value;
  const auto r = parse_token_response(c.status, body.dump(), std::nullopt);
  ASSERT_FALSE(r.has_value());
  const TokenError& e = r.error();
  EXPECT_EQ(e.kind, c.kind) << c.name << ": " << e.explanation;
  EXPECT_EQ(e.http_status, c.status);
  EXPECT_EQ(e.error, c.error);
  EXPECT_EQ(e.aadsts, c.code);
  EXPECT_EQ(e.correlation_id, "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff");
  EXPECT_EQ(e.trace_id, "0b3c4d5e-0000-1111-2222-333344445555");
  EXPECT_FALSE(e.explanation.empty());
  EXPECT_EQ(e.explanation.find("Something happened"), std::string::npos)
      << "error_description is not shown";
  const Error error = to_error(e);
  EXPECT_EQ(error.code, c.errc);
  EXPECT_NE(error.message.find("AADSTS" + std::to_string(c.code)), std::string::npos)
      << error.message;
  EXPECT_NE(error.message.find("9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"), std::string::npos);
  EXPECT_NE(error.message.find(e.explanation), std::string::npos);
  expect_no_secret(e, c.name);
}

constexpr auto P = GrantFailure::permanent;
constexpr auto T = GrantFailure::transient;
constexpr auto C = GrantFailure::config;
constexpr auto B = GrantFailure::bad_response;

INSTANTIATE_TEST_SUITE_P(
    Microsoft, TokenResponseError,
    ::testing::Values(
        ErrorCase{"expired_70008", 400, "invalid_grant", 70008, P, Errc::needs_reauth},
        ErrorCase{"inactive_700082", 400, "invalid_grant", 700082, P, Errc::needs_reauth},
        ErrorCase{"sign_in_frequency_70043", 400, "invalid_grant", 70043, P, Errc::needs_reauth},
        ErrorCase{"revoked_50173", 400, "invalid_grant", 50173, P, Errc::needs_reauth},
        ErrorCase{"consent_65001", 400, "invalid_grant", 65001, P, Errc::needs_reauth},
        ErrorCase{"consent_required_65001", 400, "consent_required", 65001, P, Errc::needs_reauth},
        ErrorCase{"admin_consent_90094", 400, "invalid_grant", 90094, P, Errc::needs_reauth},
        ErrorCase{"invalid_grant_70000", 400, "invalid_grant", 70000, P, Errc::needs_reauth},
        ErrorCase{"malformed_9002313", 400, "invalid_grant", 9002313, P, Errc::needs_reauth},
        ErrorCase{"malformed_request_9002313", 400, "invalid_request", 9002313, P,
                  Errc::needs_reauth},
        ErrorCase{"code_redeemed_54005", 400, "invalid_grant", 54005, P, Errc::needs_reauth},
        ErrorCase{"mfa_50076", 400, "interaction_required", 50076, P, Errc::needs_reauth},
        ErrorCase{"mfa_enroll_50079", 400, "interaction_required", 50079, P, Errc::needs_reauth},
        ErrorCase{"credentials_50126", 400, "invalid_grant", 50126, P, Errc::needs_reauth},
        ErrorCase{"conditional_access_53003", 400, "invalid_grant", 53003, P, Errc::needs_reauth},
        ErrorCase{"unknown_invalid_grant", 400, "invalid_grant", 4242, P, Errc::needs_reauth},
        ErrorCase{"unknown_client_700016", 400, "unauthorized_client", 700016, C,
                  Errc::endpoint_bad_response},
        ErrorCase{"unknown_client_as_invalid_grant", 400, "invalid_grant", 700016, C,
                  Errc::endpoint_bad_response},
        ErrorCase{"bad_secret_7000215", 401, "invalid_client", 7000215, C,
                  Errc::endpoint_bad_response},
        ErrorCase{"expired_secret_7000222", 401, "invalid_client", 7000222, C,
                  Errc::endpoint_bad_response},
        ErrorCase{"missing_secret_7000218", 401, "invalid_client", 7000218, C,
                  Errc::endpoint_bad_response},
        ErrorCase{"resource_500011", 400, "invalid_resource", 500011, C,
                  Errc::endpoint_bad_response},
        ErrorCase{"unsupported_grant", 400, "unsupported_grant_type", 70003, C,
                  Errc::endpoint_bad_response},
        ErrorCase{"loop_50196", 400, "invalid_grant", 50196, T, Errc::endpoint_unavailable},
        ErrorCase{"directory_down_90033", 400, "temporarily_unavailable", 90033, T,
                  Errc::endpoint_unavailable},
        ErrorCase{"server_error_500", 500, "server_error", 90033, T, Errc::endpoint_unavailable},
        ErrorCase{"unavailable_503", 503, "temporarily_unavailable", 90033, T,
                  Errc::endpoint_unavailable},
        ErrorCase{"invalid_grant_but_503", 503, "invalid_grant", 70008, T,
                  Errc::endpoint_unavailable},
        ErrorCase{"throttled_429", 429, "temporarily_unavailable", 50196, T,
                  Errc::endpoint_unavailable},
        ErrorCase{"timeout_408", 408, "invalid_request", 9002313, T, Errc::endpoint_unavailable},
        ErrorCase{"unrelated_error_unknown_code", 400, "authorization_pending", 4242, B,
                  Errc::endpoint_bad_response}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(TokenResponse, UnrecognisedErrorStringsAreNotEchoed) {
  json body = ms_error("invalid_grant", 70008);
  body["error"] = "Bad Thing!";
  const auto r = parse_token_response(400, body.dump(), std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().error, "unrecognized_error");
  EXPECT_EQ(r.error().kind, GrantFailure::permanent) << "the AADSTS code still decides";
}

TEST(TokenResponse, CodeFromTheDescriptionWhenErrorCodesIsMissing) {
  json body = ms_error("invalid_grant", 700082);
  body.erase("error_codes");
  const auto r = parse_token_response(400, body.dump(), std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().aadsts, 700082);
  EXPECT_NE(r.error().explanation.find("90 days"), std::string::npos);
}

TEST(TokenResponse, PlainOAuthErrorsWithoutMicrosoftFields) {
  const auto r = parse_token_response(400, R"({"error":"invalid_grant"})", std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, GrantFailure::permanent);
  EXPECT_EQ(r.error().aadsts, 0);
  EXPECT_TRUE(r.error().correlation_id.empty());
  const auto message = to_error(r.error()).message;
  EXPECT_EQ(message.find("AADSTS"), std::string::npos) << message;
  EXPECT_NE(message.find("invalid_grant"), std::string::npos) << message;
}

TEST(TokenResponse, IdsThatAreNotUuidsAreDropped) {
  json body = ms_error("invalid_grant", 70008);
  body["correlation_id"] = refresh_value;
  body["trace_id"] = "x\r\ny";
  const auto r = parse_token_response(400, body.dump(), std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().correlation_id.empty());
  EXPECT_TRUE(r.error().trace_id.empty());
  expect_no_secret(r.error(), "ids");
}

TEST(TokenResponse, ErrorMessageHasTheAgreedShape) {
  const auto r = parse_token_response(400, ms_error("invalid_grant", 700082).dump(), std::nullopt);
  ASSERT_FALSE(r);
  const Error e = to_error(r.error());
  EXPECT_EQ(e.code, Errc::needs_reauth);
  EXPECT_TRUE(
      e.message.starts_with("token endpoint refused the refresh token (invalid_grant, "
                            "AADSTS700082, correlation id "
                            "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff): "))
      << e.message;
}

// ---- transient answers and Retry-After

struct RetryAfterCase {
  const char* name;
  int status;
  std::optional<std::string> header;
  std::optional<std::chrono::seconds> expected;
};

class TokenResponseRetryAfter : public ::testing::TestWithParam<RetryAfterCase> {};

TEST_P(TokenResponseRetryAfter, ParsesDelaySecondsOnly) {
  const auto& c = GetParam();
  std::optional<std::string_view> header;
  if (c.header) {
    header = *c.header;
  }
  const auto r = parse_token_response(c.status, "<html>busy</html>", header);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, GrantFailure::transient) << c.name;
  EXPECT_EQ(r.error().retry_after, c.expected) << c.name;
  EXPECT_EQ(to_error(r.error()).code, Errc::endpoint_unavailable);
}

INSTANTIATE_TEST_SUITE_P(
    Headers, TokenResponseRetryAfter,
    ::testing::Values(RetryAfterCase{"seconds_429", 429, "2", 2s},
                      RetryAfterCase{"seconds_503_spaces", 503, " 30 ", 30s},
                      RetryAfterCase{"zero", 503, "0", 0s},
                      RetryAfterCase{"absent", 500, std::nullopt, std::nullopt},
                      RetryAfterCase{"http_date_ignored", 503, "Wed, 21 Oct 2015 07:28:00 GMT",
                                     std::nullopt},
                      RetryAfterCase{"negative_ignored", 429, "-5", std::nullopt},
                      RetryAfterCase{"garbage_ignored", 429, "5s", std::nullopt},
                      RetryAfterCase{"huge_capped", 429, "99999999", 86400s},
                      RetryAfterCase{"timeout_408", 408, "1", 1s},
                      RetryAfterCase{"bad_gateway", 502, std::nullopt, std::nullopt},
                      RetryAfterCase{"gateway_timeout", 504, std::nullopt, std::nullopt}),
    [](const auto& p) { return std::string(p.param.name); });

// ---- plausible_token

// The parse moves the tokens out of its JSON document and wipes what is left (issue #7, item 9):
// the grant holds them whole.
TEST(TokenResponse, TheGrantHoldsTheTokensTakenFromTheDocument) {
  json body = success_body();
  body["id_token"] = "header.payload.signature";
  const auto grant = parse_token_response(200, body.dump(), std::nullopt);
  ASSERT_TRUE(grant.has_value());
  EXPECT_EQ(grant->access_token.reveal(), access_value);
  ASSERT_TRUE(grant->refresh_token.has_value());
  EXPECT_EQ(grant->refresh_token->reveal(), refresh_value);
  EXPECT_EQ(grant->scope, body["scope"].get<std::string>());
  EXPECT_EQ(grant->id_token, std::optional<std::string>("header.payload.signature"));
}

TEST(WipeJsonStrings, LeavesNoTokenBytesInTheDocument) {
  // Nested the way a misbehaving endpoint might send it, with a token in an array too.
  json doc = success_body();
  doc["nested"] = {{"inner", {{"refresh_token", refresh_value}}}, {"list", {access_value, 7}}};
  ASSERT_NE(doc.dump().find(access_value), std::string::npos);
  wipe_json_strings(doc);
  const std::string after = doc.dump();
  EXPECT_EQ(after.find("secretACCESS"), std::string::npos) << after;
  EXPECT_EQ(after.find("secretREFRESH"), std::string::npos) << after;
  EXPECT_TRUE(doc["access_token"].get_ref<const std::string&>().empty());
  EXPECT_TRUE(doc["nested"]["inner"]["refresh_token"].get_ref<const std::string&>().empty());
  EXPECT_TRUE(doc["nested"]["list"][0].get_ref<const std::string&>().empty());
  // Only strings change: field names, numbers and the shape stay.
  EXPECT_EQ(doc["expires_in"], 3599);
  EXPECT_EQ(doc["nested"]["list"][1], 7);
  EXPECT_TRUE(doc.contains("refresh_token"));
}

TEST(WipeJsonStrings, HandlesDeepNestingWithoutRecursion) {
  const std::string deep =
      std::string(100'000, '[') + "\"" + access_value + "\"" + std::string(100'000, ']');
  json doc = json::parse(deep, nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  wipe_json_strings(doc);
  const json* innermost = &doc;
  while (innermost->is_array()) {
    innermost = &(*innermost)[0];
  }
  EXPECT_TRUE(innermost->get_ref<const std::string&>().empty());
}

TEST(WipeJsonStrings, GuardWipesOnScopeExit) {
  json doc = success_body();
  {
    const JsonWipeGuard guard(doc);
    EXPECT_EQ(doc["access_token"], access_value);
  }
  EXPECT_TRUE(doc["access_token"].get_ref<const std::string&>().empty());
  EXPECT_TRUE(doc["refresh_token"].get_ref<const std::string&>().empty());
}

TEST(PlausibleToken, AcceptsPrintableAscii) {
  EXPECT_TRUE(plausible_token("rt.abc-DEF_123"));
  EXPECT_TRUE(plausible_token("0.AXoA~x!$%&'()*+,/:;<=>?@[]^`{|}"));
  EXPECT_TRUE(plausible_token(std::string(16 * 1024, 'a')));
}

TEST(PlausibleToken, RejectsWhatNoEndpointIssues) {
  EXPECT_FALSE(plausible_token(""));
  EXPECT_FALSE(plausible_token("a b"));
  EXPECT_FALSE(plausible_token("a\tb"));
  EXPECT_FALSE(plausible_token("abc\r\n"));
  EXPECT_FALSE(plausible_token(std::string("a\0b", 3)));
  EXPECT_FALSE(plausible_token("a\x7f"));
  EXPECT_FALSE(plausible_token("caf\xc3\xa9"));
  EXPECT_FALSE(plausible_token(std::string(16 * 1024 + 1, 'a')));
}

TEST(GrantFailureNames, AreStable) {
  EXPECT_EQ(to_string(GrantFailure::permanent), "permanent");
  EXPECT_EQ(to_string(GrantFailure::transient), "transient");
  EXPECT_EQ(to_string(GrantFailure::bad_response), "bad_response");
  EXPECT_EQ(to_string(GrantFailure::config), "config");
}

}  // namespace
}  // namespace iop::auth
