// The token endpoint client against the test token endpoint (tests/peers/token_endpoint.py) on
// loopback: real HTTP, real faults, real retries.

#include "auth/token_endpoint.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/log_capture.hpp"
#include "tests/support/process.hpp"
#include "tests/support/run_coro.hpp"
#include "tests/support/token_endpoint_peer.hpp"

namespace iop::auth {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using GrantResult = std::expected<TokenGrant, TokenError>;

constexpr const char* email = "alice@example.com";

class TokenEndpointTest : public ::testing::Test {
 protected:
  void TearDown() override { pool_.join(); }

  OAuthClientSettings settings() const {
    OAuthClientSettings s;
    s.token_endpoint = peer_.token_url();
    s.client_id = "test-client";
    s.http.timeout = 5s;
    s.http.connect_timeout = 2s;
    s.backoff = BackoffPolicy{3, 10ms, 50ms};
    return s;
  }

  // One refresh() through a fresh io_context, with the curl calls on pool_.
  GrantResult refresh(const std::string& refresh_token, OAuthClientSettings s) {
    TokenEndpoint endpoint(std::move(s), pool_.get_executor());
    return test::run_coro<GrantResult>(
        [&endpoint, refresh_token] { return endpoint.refresh(Secret(refresh_token), email); });
  }
  GrantResult refresh(const std::string& refresh_token) {
    return refresh(refresh_token, settings());
  }

  int total() { return peer_.stats()["total"].get<int>(); }

  test::TokenEndpointPeer peer_;
  net::thread_pool pool_{2};
};

TEST_F(TokenEndpointTest, RefreshesAndRotates) {
  const auto first = peer_.add_account(email);
  const auto r = refresh(first);
  ASSERT_TRUE(r.has_value()) << to_error(r.error()).message;
  EXPECT_EQ(r->expires_in, 3599s);
  EXPECT_EQ(r->scope, settings().scope);
  ASSERT_TRUE(r->refresh_token.has_value());
  EXPECT_NE(r->refresh_token->reveal(), first) << "every refresh issues a new refresh token";

  const auto introspected = peer_.introspect(r->access_token.reveal());
  EXPECT_TRUE(introspected["active"].get<bool>());
  EXPECT_EQ(introspected["email"], email);
  EXPECT_FALSE(peer_.introspect("at.unknown")["active"].get<bool>());

  // Microsoft's default: the old refresh token stays valid.
  EXPECT_TRUE(peer_.check(first)["valid"].get<bool>());
  EXPECT_TRUE(peer_.check(r->refresh_token->reveal())["valid"].get<bool>());
  EXPECT_EQ(peer_.stats()["per_account"][email].get<int>(), 1);
}

TEST_F(TokenEndpointTest, RevokeOnUseProvesTheSuccessorWasUsed) {
  peer_.configure({{"rotation", "revoke_on_use"}});
  const auto first = peer_.add_account(email);
  const auto second = refresh(first);
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(peer_.check(first)["valid"].get<bool>()) << "until the successor is presented";
  const auto third = refresh(second->refresh_token->reveal());
  ASSERT_TRUE(third.has_value());
  const auto check = peer_.check(first);
  EXPECT_FALSE(check["valid"].get<bool>());
  EXPECT_TRUE(check["revoked"].get<bool>());

  const auto stale = refresh(first);
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().kind, GrantFailure::permanent);
  EXPECT_EQ(stale.error().aadsts, 50173);
}

TEST_F(TokenEndpointTest, RevokeImmediately) {
  peer_.configure({{"rotation", "revoke_immediately"}});
  const auto first = peer_.add_account(email);
  ASSERT_TRUE(refresh(first).has_value());
  EXPECT_FALSE(peer_.check(first)["valid"].get<bool>());
}

TEST_F(TokenEndpointTest, RevokedGrantFailsAtOnceWithOneRequest) {
  const auto rt = peer_.add_account(email);
  peer_.revoke(email);
  const auto r = refresh(rt);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::permanent);
  EXPECT_EQ(r.error().error, "invalid_grant");
  EXPECT_EQ(r.error().aadsts, 50173);
  EXPECT_EQ(r.error().http_status, 400);
  EXPECT_FALSE(r.error().correlation_id.empty());
  const Error e = to_error(r.error());
  EXPECT_EQ(e.code, Errc::needs_reauth);
  EXPECT_NE(e.message.find("AADSTS50173"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find(r.error().correlation_id), std::string::npos) << e.message;
  EXPECT_EQ(peer_.stats()["per_account"][email].get<int>(), 1) << "permanent: no retry";
}

TEST_F(TokenEndpointTest, UnknownRefreshTokenIsPermanent) {
  const auto r = refresh("rt.never-issued");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::permanent);
  EXPECT_EQ(r.error().aadsts, 70000);
  EXPECT_EQ(total(), 1);
}

TEST_F(TokenEndpointTest, ScriptedAadstsCodeIsClassified) {
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"kind", "aadsts"}, {"code", 700082}}}), email);
  const auto r = refresh(rt);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::permanent);
  EXPECT_EQ(r.error().aadsts, 700082);
  EXPECT_NE(r.error().explanation.find("90 days"), std::string::npos);
  EXPECT_EQ(total(), 1);
}

TEST_F(TokenEndpointTest, Transient503IsRetried) {
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"status", 503}}}));
  const auto r = refresh(rt);
  ASSERT_TRUE(r.has_value()) << to_error(r.error()).message;
  EXPECT_EQ(total(), 2);
}

TEST_F(TokenEndpointTest, RetryAfterIsHonoured) {
  test::LogCapture log;
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"status", 429}, {"retry_after", 1}}}));
  const auto r = refresh(rt);
  ASSERT_TRUE(r.has_value()) << to_error(r.error()).message;
  EXPECT_EQ(total(), 2);
  // The policy alone would wait at most 50 ms; the server's second wins.
  EXPECT_TRUE(log.contains("retrying in 1000 ms")) << log.text();
}

TEST_F(TokenEndpointTest, RetriesStopWithinTheTotalBudget) {
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"status", 429}, {"retry_after", 2}}, {{"status", 503}}}));
  auto s = settings();
  s.http.timeout = 1s;
  s.backoff.max_total = 2500ms;  // 2 s Retry-After + a 1 s attempt would overrun it
  const auto r = refresh(rt, s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::transient);
  EXPECT_EQ(total(), 1) << "no attempt that could end after the budget";
}

TEST_F(TokenEndpointTest, DroppedConnectionIsRetried) {
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"kind", "drop"}}}));
  const auto r = refresh(rt);
  ASSERT_TRUE(r.has_value()) << to_error(r.error()).message;
  EXPECT_EQ(total(), 2);
}

TEST_F(TokenEndpointTest, TimeoutIsTransient) {
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"kind", "delay"}, {"ms", 2000}}}));
  auto s = settings();
  s.http.timeout = 200ms;
  s.backoff.max_attempts = 1;
  const auto r = refresh(rt, s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::transient);
  EXPECT_EQ(r.error().http_status, 0);
  EXPECT_EQ(to_error(r.error()).code, Errc::endpoint_unavailable);
  EXPECT_NE(r.error().explanation.find("timed out"), std::string::npos) << r.error().explanation;
}

TEST_F(TokenEndpointTest, TimeoutThenSuccessIsRetried) {
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"kind", "delay"}, {"ms", 2000}}}));
  auto s = settings();
  s.http.timeout = 200ms;
  const auto r = refresh(rt, s);
  ASSERT_TRUE(r.has_value()) << to_error(r.error()).message;
  EXPECT_EQ(total(), 2);
}

TEST_F(TokenEndpointTest, AllRetriesExhaustedIsTransient) {
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"status", 503}}, {{"status", 500}}, {{"status", 503}}}));
  const auto r = refresh(rt);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::transient);
  EXPECT_EQ(r.error().http_status, 503);
  EXPECT_EQ(to_error(r.error()).code, Errc::endpoint_unavailable);
  EXPECT_EQ(total(), 3) << "max_attempts is 3";
  EXPECT_TRUE(refresh(rt).has_value()) << "works once the endpoint recovers";
}

TEST_F(TokenEndpointTest, UnreachableEndpointIsTransient) {
  auto s = settings();
  // A port nothing listens on: connection refused at once.
  s.token_endpoint =
      "http://127.0.0.1:" + std::to_string(test::free_port()) + "/t/oauth2/v2.0/token";
  s.backoff.max_attempts = 2;
  const auto r = refresh("rt.anything", s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::transient);
  EXPECT_EQ(to_error(r.error()).code, Errc::endpoint_unavailable);
}

TEST_F(TokenEndpointTest, WrongClientIdIsConfig) {
  const auto rt = peer_.add_account(email);
  auto s = settings();
  s.client_id = "someone-else";
  const auto r = refresh(rt, s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::config);
  EXPECT_EQ(r.error().error, "unauthorized_client");
  EXPECT_EQ(r.error().aadsts, 700016);
  EXPECT_NE(r.error().explanation.find("client_id"), std::string::npos);
  EXPECT_EQ(to_error(r.error()).code, Errc::endpoint_bad_response);
  EXPECT_EQ(total(), 1) << "config errors are not retried";
}

TEST_F(TokenEndpointTest, ClientSecretIsSentEncoded) {
  // Characters that would break a form body if not URL-encoded.
  const std::string secret = "s3+cr&t=%20 x";
  peer_.configure({{"client_secret", secret}});
  const auto rt = peer_.add_account(email);
  auto s = settings();
  s.client_secret = Secret(secret);
  ASSERT_TRUE(refresh(rt, s).has_value());

  s.client_secret = Secret(std::string_view("wrong"));
  const auto wrong = refresh(rt, s);
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().kind, GrantFailure::config);
  EXPECT_EQ(wrong.error().aadsts, 7000215);

  const auto missing = refresh(rt, settings());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().kind, GrantFailure::config);
  EXPECT_EQ(missing.error().aadsts, 7000218);
}

TEST_F(TokenEndpointTest, BadAnswersAreNotRetried) {
  const auto rt = peer_.add_account(email);
  const json faults[] = {
      {{"kind", "malformed"}},
      {{"kind", "no_access_token"}},
      {{"kind", "bad_expires_in"}, {"expires_in", -5}},
      {{"kind", "bad_expires_in"}, {"expires_in", 1e12}},
      {{"kind", "bad_expires_in"}, {"expires_in", "soon"}},
      {{"kind", "error_200"}},
  };
  int expected_total = 0;
  for (const auto& fault : faults) {
    peer_.add_faults(json::array({fault}));
    const auto r = refresh(rt);
    ASSERT_FALSE(r.has_value()) << fault.dump();
    EXPECT_EQ(r.error().kind, GrantFailure::bad_response) << fault.dump();
    EXPECT_EQ(total(), ++expected_total) << fault.dump();
  }
  EXPECT_TRUE(peer_.check(rt)["valid"].get<bool>());
}

TEST_F(TokenEndpointTest, ControlCharacterRefreshTokenIsNeverSent) {
  const auto r = refresh("rt.abc\r\nX-Injected: 1");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, GrantFailure::bad_response);
  EXPECT_EQ(r.error().explanation,
            "the stored refresh token contains characters a token cannot have");
  EXPECT_EQ(to_error(r.error()).code, Errc::endpoint_bad_response);
  EXPECT_EQ(total(), 0);

  TokenEndpoint endpoint(settings(), pool_.get_executor());
  EXPECT_FALSE(endpoint.refresh_once(Secret(std::string_view("rt.a\x01z"))).has_value());
  EXPECT_FALSE(endpoint.refresh_once(Secret()).has_value());
  EXPECT_EQ(total(), 0);
}

TEST_F(TokenEndpointTest, RefreshOnceBlocks) {
  const auto rt = peer_.add_account(email);
  TokenEndpoint endpoint(settings(), pool_.get_executor());
  const auto r = endpoint.refresh_once(Secret(rt));
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(peer_.introspect(r->access_token.reveal())["active"].get<bool>());
  peer_.add_faults(json::array({{{"status", 503}}}));
  const auto once = endpoint.refresh_once(Secret(rt));
  ASSERT_FALSE(once.has_value());
  EXPECT_EQ(once.error().kind, GrantFailure::transient) << "refresh_once does not retry";
  EXPECT_EQ(total(), 2);
}

TEST_F(TokenEndpointTest, LogsCarryContextButNoTokens) {
  test::LogCapture log;
  const auto rt = peer_.add_account(email);
  peer_.add_faults(json::array({{{"status", 503}}}));
  const auto ok = refresh(rt);
  ASSERT_TRUE(ok.has_value());
  peer_.revoke(email);
  const auto dead = refresh(ok->refresh_token->reveal());
  ASSERT_FALSE(dead.has_value());

  const std::string text = log.text();
  EXPECT_NE(text.find("warning account=alice@example.com token refresh attempt 1/3 failed: "
                      "transient"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("error account=alice@example.com token refresh attempt 1/3 failed: "
                      "permanent"),
            std::string::npos)
      << "permanent failures stop at once" << text;
  EXPECT_NE(text.find("AADSTS50173"), std::string::npos) << text;
  EXPECT_NE(text.find(dead.error().correlation_id), std::string::npos) << text;
  for (const std::string& secret : {rt, ok->access_token.reveal(), ok->refresh_token->reveal()}) {
    EXPECT_EQ(text.find(secret), std::string::npos);
  }
}

}  // namespace
}  // namespace iop::auth
