#include "auth/device_flow.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iop::auth {
namespace {

using std::chrono::seconds;

constexpr std::string_view microsoft_answer = R"({
  "user_code": "ABCD-EFGH",
  "device_code": "DAQABAAEAAAD--DLA3VO7QrddgJg7WevrSECRETDEVICE",
  "verification_uri": "https://microsoft.com/devicelogin",
  "expires_in": 900,
  "interval": 5,
  "message": "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD-EFGH to authenticate."
})";

TEST(DeviceAuthorization, ReadsMicrosoftsAnswer) {
  const auto got = parse_device_authorization(200, microsoft_answer);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->device_code.reveal(), "DAQABAAEAAAD--DLA3VO7QrddgJg7WevrSECRETDEVICE");
  EXPECT_EQ(got->user_code, "ABCD-EFGH");
  EXPECT_EQ(got->verification_uri, "https://microsoft.com/devicelogin");
  EXPECT_FALSE(got->verification_uri_complete);
  EXPECT_EQ(got->expires_in, seconds(900));
  EXPECT_EQ(got->interval, seconds(5));
  EXPECT_TRUE(got->message.starts_with("To sign in"));
}

TEST(DeviceAuthorization, ReadsGooglesVerificationUrlAndDefaultsTheInterval) {
  const auto got = parse_device_authorization(200, R"({"device_code":"4/4-GMMhmHCXhWEzkobqIHGG",
      "user_code":"GQVQ-JKEC","verification_url":"https://www.google.com/device",
      "verification_uri_complete":"https://www.google.com/device?user_code=GQVQ-JKEC",
      "expires_in":"1800"})");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->verification_uri, "https://www.google.com/device");
  EXPECT_EQ(got->verification_uri_complete, "https://www.google.com/device?user_code=GQVQ-JKEC");
  EXPECT_EQ(got->expires_in, seconds(1800));
  EXPECT_EQ(got->interval, seconds(5));  // RFC 8628 §3.2 default
  EXPECT_TRUE(got->message.empty());
}

struct BadAnswer {
  const char* name;
  int status;
  std::string body;
  std::string message;
  Errc code = Errc::endpoint_bad_response;
  int aadsts = 0;
};

class DeviceAuthorizationErrors : public ::testing::TestWithParam<BadAnswer> {};

TEST_P(DeviceAuthorizationErrors, OneLineErrorNamingTheProblem) {
  const auto& bad = GetParam();
  const auto got = parse_device_authorization(bad.status, bad.body);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, bad.code);
  EXPECT_NE(got.error().message.find(bad.message), std::string::npos) << got.error().message;
  EXPECT_EQ(got.error().message.find('\n'), std::string::npos);
  EXPECT_EQ(got.error().message.find("SECRET"), std::string::npos) << got.error().message;
  // The AADSTS code is named in the message (iop::Error carries no Microsoft-only field).
  if (bad.aadsts != 0) {
    EXPECT_NE(got.error().message.find("AADSTS" + std::to_string(bad.aadsts)), std::string::npos)
        << got.error().message;
  } else {
    EXPECT_EQ(got.error().message.find("AADSTS"), std::string::npos) << got.error().message;
  }
}

const std::string ok_fields =
    R"("device_code":"SECRETDEV","user_code":"U-1","verification_uri":"https://x.example/d")";
INSTANTIATE_TEST_SUITE_P(
    Table, DeviceAuthorizationErrors,
    ::testing::Values(
        BadAnswer{"no_device_code", 200,
                  R"({"user_code":"U","verification_uri":"https://x/d","expires_in":900})",
                  "the device authorization response has no device_code"},
        BadAnswer{"no_user_code", 200,
                  R"({"device_code":"SECRETDEV","verification_uri":"https://x/d","expires_in":9})",
                  "the device authorization response has no user_code"},
        BadAnswer{"no_verification_uri", 200,
                  R"({"device_code":"SECRETDEV","user_code":"U","expires_in":900})",
                  "the device authorization response has no verification_uri"},
        BadAnswer{"verification_uri_not_web", 200,
                  R"({"device_code":"SECRETDEV","user_code":"U","verification_uri":"javascript:x",)"
                  R"("expires_in":900})",
                  "has no verification_uri (an http(s) address)"},
        BadAnswer{"no_expires_in", 200, "{" + ok_fields + "}",
                  "the device authorization response has no expires_in"},
        BadAnswer{"expires_in_zero", 200, "{" + ok_fields + R"(,"expires_in":0})",
                  "expires_in is not a whole number of seconds within 1 s .. 24 h"},
        BadAnswer{"expires_in_huge", 200, "{" + ok_fields + R"(,"expires_in":86401})",
                  "expires_in is not"},
        BadAnswer{"expires_in_fraction", 200, "{" + ok_fields + R"(,"expires_in":1.5})",
                  "expires_in is not"},
        BadAnswer{"interval_zero", 200, "{" + ok_fields + R"(,"expires_in":900,"interval":0})",
                  "interval is not a whole number of seconds within 1 s .. 5 min"},
        BadAnswer{"user_code_with_escape", 200,
                  R"({"device_code":"SECRETDEV","user_code":"\u001b[2J","expires_in":900,)"
                  R"("verification_uri":"https://x/d"})",
                  "has no user_code"},
        BadAnswer{"not_json", 200, "<html>", "a body that is not a JSON object"},
        BadAnswer{"unknown_client", 400,
                  R"({"error":"unauthorized_client","error_description":"AADSTS700016: )"
                  R"(Application with identifier 'x' was not found","error_codes":[700016],)"
                  R"("correlation_id":"0f3c-11"})",
                  "refused the request (unauthorized_client, AADSTS700016, HTTP 400, correlation "
                  "id 0f3c-11): the application (client id) is not registered",
                  Errc::endpoint_bad_response, 700016},
        BadAnswer{"invalid_scope", 400,
                  R"({"error":"invalid_scope","error_description":"bad scope SECRET"})",
                  "(invalid_scope, HTTP 400): the requested scope is not valid"},
        BadAnswer{"public_client_flows_off", 400,
                  R"({"error":"invalid_client","error_description":"AADSTS7000218: x"})",
                  "AADSTS7000218", Errc::endpoint_bad_response, 7000218},
        BadAnswer{"unavailable", 503, "busy", "unavailable; try again in a moment",
                  Errc::endpoint_unavailable},
        BadAnswer{"error_in_200", 200, R"({"error":"invalid_request"})",
                  "the device authorization endpoint refused the request (invalid_request"}),
    [](const auto& p) { return std::string(p.param.name); });

TokenError poll_error(std::string error, GrantFailure kind = GrantFailure::permanent,
                      int status = 400) {
  TokenError e;
  e.kind = kind;
  e.http_status = status;
  e.error = std::move(error);
  return e;
}

TEST(NextDeviceStep, PendingKeepsTheInterval) {
  const auto step = next_device_step(poll_error("authorization_pending"), seconds(5));
  EXPECT_EQ(step.action, DevicePollAction::keep_polling);
  EXPECT_EQ(step.interval, seconds(5));
}

TEST(NextDeviceStep, SlowDownAddsFiveSecondsEachTime) {
  auto interval = seconds(5);
  for (const int want : {10, 15, 20}) {
    const auto step = next_device_step(poll_error("slow_down"), interval);
    ASSERT_EQ(step.action, DevicePollAction::keep_polling);
    EXPECT_EQ(step.interval, seconds(want));
    interval = step.interval;
  }
}

TEST(NextDeviceStep, TerminalOutcomes) {
  const auto expired = next_device_step(poll_error("expired_token"), seconds(5));
  EXPECT_EQ(expired.action, DevicePollAction::expired);
  EXPECT_EQ(expired.message, "the code expired before sign-in finished; run the command again");
  for (const char* e : {"authorization_declined", "access_denied"}) {
    const auto step = next_device_step(poll_error(e), seconds(5));
    EXPECT_EQ(step.action, DevicePollAction::declined) << e;
    EXPECT_TRUE(step.message.starts_with("sign-in was declined")) << step.message;
  }
  EXPECT_EQ(next_device_step(poll_error("bad_verification_code"), seconds(5)).action,
            DevicePollAction::bad_code);
}

TEST(NextDeviceStep, OtherErrorsFailWithAnExplanation) {
  auto e = poll_error("invalid_client", GrantFailure::config);
  e.aadsts = 700016;
  const auto step = next_device_step(e, seconds(5));
  EXPECT_EQ(step.action, DevicePollAction::failed);
  EXPECT_EQ(step.message,
            "sign-in failed (invalid_client, AADSTS700016, HTTP 400): the application (client id) "
            "is not registered in the tenant; check [oauth] client_id and token_endpoint");
  const auto grant = next_device_step(poll_error("invalid_grant"), seconds(5));
  EXPECT_EQ(grant.action, DevicePollAction::failed);
  EXPECT_NE(grant.message.find("device code was not accepted"), std::string::npos);
}

TEST(NextDeviceStep, TransientFailuresBackOff) {
  const auto first = next_device_step(poll_error("", GrantFailure::transient, 503), seconds(5));
  EXPECT_EQ(first.action, DevicePollAction::keep_polling);
  EXPECT_EQ(first.interval, seconds(10));
  EXPECT_EQ(next_device_step(poll_error("", GrantFailure::transient, 0), seconds(40)).interval,
            seconds(60));
  auto limited = poll_error("", GrantFailure::transient, 429);
  limited.retry_after = seconds(90);
  EXPECT_EQ(next_device_step(limited, seconds(5)).interval, seconds(90));
}

TEST(CountdownLine, ShowsWhereWhatAndHowLong) {
  const auto device = parse_device_authorization(200, microsoft_answer);
  ASSERT_TRUE(device);
  EXPECT_EQ(countdown_line(*device, seconds(14 * 60 + 32)),
            "waiting for sign-in at https://microsoft.com/devicelogin with code ABCD-EFGH "
            "(expires in 14:32)");
  EXPECT_TRUE(countdown_line(*device, seconds(-3)).ends_with("(expires in 0:00)"));
  EXPECT_TRUE(countdown_line(*device, seconds(3600 + 61)).ends_with("(expires in 1:01:01)"));
  EXPECT_EQ(countdown_line(*device, seconds(5)).find("SECRET"), std::string::npos);
}

}  // namespace
}  // namespace iop::auth
