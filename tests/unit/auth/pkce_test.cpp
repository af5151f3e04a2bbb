#include "auth/pkce.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

#include "auth/aadsts.hpp"
#include "auth/base64.hpp"
#include "common/ascii.hpp"

namespace iop::auth {
namespace {

constexpr std::string_view redirect = "http://localhost:51234/";
constexpr std::string_view state = "S-state_123";
constexpr std::string_view code = "M.C123_BAY.2.U.abc-def~ghi";  // unreserved, as real codes are

bool all_unreserved(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return is_ascii_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
  });
}

TEST(Pkce, Rfc7636AppendixBVector) {
  const auto pair = pkce_from_verifier(Secret("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
  EXPECT_EQ(pair.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  EXPECT_EQ(pair.method, "S256");
  EXPECT_EQ(pair.verifier.reveal(), "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
}

TEST(Pkce, MakePkceGivesAFreshValidPair) {
  const auto a = make_pkce();
  const auto b = make_pkce();
  EXPECT_EQ(a.verifier.size(), 43u);  // 32 bytes, base64url, no padding
  EXPECT_TRUE(all_unreserved(a.verifier.reveal()));
  EXPECT_EQ(a.challenge, pkce_from_verifier(a.verifier).challenge);
  EXPECT_EQ(a.challenge.size(), 43u);
  EXPECT_FALSE(a.verifier == b.verifier);
  EXPECT_NE(a.challenge, b.challenge);
}

TEST(Pkce, StateIsRandomUrlSafeAndLongEnough) {
  std::set<std::string> seen;
  for (int i = 0; i < 16; ++i) {
    const auto s = make_state();
    EXPECT_GE(s.size(), 22u);  // >= 128 bits in base64url
    EXPECT_TRUE(all_unreserved(s)) << s;
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), 16u);
}

TEST(FormUrlencode, EncodesEverythingButUnreserved) {
  EXPECT_EQ(form_urlencode("aZ09-._~"), "aZ09-._~");
  EXPECT_EQ(form_urlencode("a b"), "a+b");
  EXPECT_EQ(form_urlencode("http://localhost:1/"), "http%3A%2F%2Flocalhost%3A1%2F");
  EXPECT_EQ(form_urlencode("a+b&c=d?#%"), "a%2Bb%26c%3Dd%3F%23%25");
  EXPECT_EQ(form_urlencode("\xc3\xa9\x01"), "%C3%A9%01");
}

AuthorizeRequest sample_request() {
  AuthorizeRequest r;
  r.authorize_endpoint = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize";
  r.client_id = "client-1";
  r.redirect_uri = std::string(redirect);
  r.scope = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
  r.state = std::string(state);
  r.code_challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
  r.login_hint = "alice+tag@contoso.com";
  return r;
}

TEST(AuthorizeUrl, CarriesEveryParameterEncoded) {
  EXPECT_EQ(authorize_url(sample_request()),
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
            "?client_id=client-1&response_type=code"
            "&redirect_uri=http%3A%2F%2Flocalhost%3A51234%2F&response_mode=query"
            "&scope=https%3A%2F%2Foutlook.office.com%2FIMAP.AccessAsUser.All+offline_access"
            "&state=S-state_123&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
            "&code_challenge_method=S256&login_hint=alice%2Btag%40contoso.com");
}

TEST(AuthorizeUrl, ExtraParametersAppendOrReplace) {
  auto r = sample_request();
  r.login_hint.clear();
  r.authorize_endpoint = "https://accounts.google.com/o/oauth2/v2/auth?hl=en";
  r.extra = {{"access_type", "offline"}, {"prompt", "consent"}, {"response_mode", "x y"}};
  const auto url = authorize_url(r);
  EXPECT_TRUE(url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?hl=en&client_id="))
      << url;
  EXPECT_EQ(url.find("login_hint"), std::string::npos);
  EXPECT_NE(url.find("&response_mode=x+y&"), std::string::npos) << url;
  EXPECT_EQ(url.find("response_mode=query"), std::string::npos) << url;
  EXPECT_TRUE(url.ends_with("&access_type=offline&prompt=consent")) << url;
  r.extra = {{"response_mode", ""}};
  EXPECT_EQ(authorize_url(r).find("response_mode"), std::string::npos);
}

std::string answer(std::string_view query) {
  return "http://localhost:51234/?" + std::string(query);
}

TEST(ParseRedirect, AcceptsAPastedUrlWithWhitespace) {
  const auto got = parse_redirect(
      "  \t" + answer("code=" + std::string(code) + "&state=S-state_123&session_state=x") + "\r\n",
      redirect, state);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->reveal(), code);
}

TEST(ParseRedirect, AcceptsARequestTarget) {
  const auto got = parse_redirect("/?state=S-state_123&code=abc", redirect, state);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->reveal(), "abc");
}

TEST(ParseRedirect, PercentDecodesValues) {
  const auto got =
      parse_redirect(answer("code=a%2Fb%3D%3D&state=S%2Dstate%5F123"), redirect, state);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->reveal(), "a/b==");
  // '+' is a space in a form-encoded value: a state with a '+' no longer matches.
  EXPECT_TRUE(parse_redirect(answer("code=abc&state=S+state_123"), redirect, "S state_123"));
}

TEST(ParseRedirect, HostCaseDefaultPortAndFragmentAreNormalised) {
  EXPECT_TRUE(
      parse_redirect("HTTP://LocalHost:51234/?code=abc&state=S-state_123#frag", redirect, state));
  EXPECT_TRUE(parse_redirect("http://localhost/?code=abc&state=s", "http://localhost:80/", "s"));
  EXPECT_TRUE(parse_redirect("http://localhost:51234?code=abc&state=S-state_123", redirect, state));
}

struct Bad {
  const char* name;
  std::string input;
  std::string expected_in_message;
  int aadsts = 0;
};

class ParseRedirectErrors : public ::testing::TestWithParam<Bad> {};

TEST_P(ParseRedirectErrors, OneLineReasonWithoutTheCode) {
  const auto& bad = GetParam();
  const auto got = parse_redirect(bad.input, redirect, state);
  ASSERT_FALSE(got) << bad.name;
  EXPECT_EQ(got.error().code, Errc::invalid_argument);
  EXPECT_NE(got.error().message.find(bad.expected_in_message), std::string::npos)
      << got.error().message;
  EXPECT_EQ(got.error().message.find('\n'), std::string::npos);
  EXPECT_EQ(got.error().message.find("SECRETCODE"), std::string::npos) << got.error().message;
  // The AADSTS code is named in the message (iop::Error carries no Microsoft-only field).
  if (bad.aadsts != 0) {
    EXPECT_NE(got.error().message.find("AADSTS" + std::to_string(bad.aadsts)), std::string::npos)
        << got.error().message;
  } else {
    EXPECT_EQ(got.error().message.find("AADSTS"), std::string::npos) << got.error().message;
  }
}

const std::string wrong_desc = "&state=S-state_123&error_description=";
INSTANTIATE_TEST_SUITE_P(
    Table, ParseRedirectErrors,
    ::testing::Values(
        Bad{"empty", "  \n", "nothing was pasted"},
        Bad{"just_the_code", "SECRETCODE", "not a web address; paste the whole address"},
        Bad{"too_long", answer("code=SECRETCODE&state=" + std::string(20000, 'x')), "longer than"},
        Bad{"other_host", "http://example.com:51234/?code=SECRETCODE&state=S-state_123",
            "expected one starting with http://localhost:51234/, got http://example.com:51234/"},
        Bad{"other_port", "http://localhost:51235/?code=SECRETCODE&state=S-state_123",
            "not this program's sign-in answer"},
        Bad{"other_scheme", "https://localhost:51234/?code=SECRETCODE&state=S-state_123",
            "got https://localhost:51234/"},
        Bad{"userinfo", "http://localhost:51234@evil.example/?code=SECRETCODE&state=S-state_123",
            "not a web address"},
        Bad{"other_path", "http://localhost:51234/other?code=SECRETCODE&state=S-state_123",
            "the path differs"},
        Bad{"bad_port", "http://localhost:99999/?code=SECRETCODE", "not a web address"},
        Bad{"missing_code", answer("state=S-state_123"), "has no authorization code"},
        Bad{"empty_code", answer("code=&state=S-state_123"), "has no authorization code"},
        Bad{"no_query", "http://localhost:51234/", "has no authorization code"},
        Bad{"missing_state", answer("code=SECRETCODE"), "(state mismatch); start again"},
        Bad{"wrong_state", answer("code=SECRETCODE&state=other"),
            "the sign-in answer does not belong to this request (state mismatch); start again"},
        Bad{"repeated_code", answer("code=SECRETCODE&code=x&state=S-state_123"),
            "repeats its 'code' parameter"},
        Bad{"bad_escape", answer("code=SECRETCODE%G1&state=S-state_123"), "malformed %-escape"},
        Bad{"truncated_escape", answer("state=S-state_123&code=SECRETCODE%2"),
            "malformed %-escape"},
        Bad{"control_in_code", answer("code=SECRETCODE%0A&state=S-state_123"),
            "authorization code in the sign-in answer is malformed"},
        Bad{"error_wrong_state", answer("error=access_denied&state=other"), "state mismatch"},
        Bad{"access_denied", answer("error=access_denied&state=S-state_123"),
            "sign-in failed (access_denied): you declined"},
        Bad{"consent_65001",
            answer("error=invalid_client&error_description=AADSTS65001%3A+The+user+or+"
                   "administrator+has+not+consented&state=S-state_123"),
            "(invalid_client, AADSTS65001)", 65001},
        Bad{"other_tenant_50020",
            answer("error=access_denied" + wrong_desc +
                   "AADSTS50020:+User+account+from+"
                   "identity+provider+does+not+exist+in+tenant"),
            "--tenant", 50020},
        Bad{"unknown_client_700016",
            answer("error=unauthorized_client" + wrong_desc +
                   "AADSTS700016%3A+Application+"
                   "not+found"),
            "client id", 700016},
        Bad{"redirect_50011",
            answer("error=invalid_request" + wrong_desc + "AADSTS50011:+The+redirect+URI"),
            "Mobile and desktop applications", 50011},
        Bad{"unknown_aadsts_shows_description",
            answer("error=invalid_request" + wrong_desc +
                   "AADSTS99999%3A+Something+odd%0D%0A"
                   "Trace+ID%3A+x"),
            "the sign-in service said: AADSTS99999: Something odd", 99999},
        Bad{"unrecognized_error_not_echoed", answer("error=SECRETCODE&state=S-state_123"),
            "sign-in failed (unrecognized error)"},
        // RFC 6749 §4.1.2.1: an error answer carries the request's state; one without it may
        // come from any local process and is not explained as the user's answer.
        Bad{"error_without_state", answer("error=access_denied"), "state mismatch"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(ParseRedirect, NewAadstsCodesAreInTheTable) {
  for (const int c : {65001, 50020, 700016, 50011}) {
    const auto info = lookup_aadsts(c);
    ASSERT_TRUE(info) << c;
    EXPECT_FALSE(info->permanent && info->config);
  }
  EXPECT_NE(lookup_aadsts(50011)->explanation.find("http://localhost"), std::string_view::npos);
}

TEST(ParseRedirect, ConsentExplanationSaysWhatToDo) {
  const auto got = parse_redirect(
      answer("error=consent_required&error_description=AADSTS65001&state=S-state_123"), redirect,
      state);
  ASSERT_FALSE(got);
  EXPECT_NE(got.error().message.find("consent"), std::string::npos) << got.error().message;
}

// Fuzz-style: every prefix of valid and invalid answers, and a pseudo-random byte soup, must
// give a value or an error, never a crash (the sanitizer build makes this stricter).
TEST(ParseRedirect, NeverCrashesOnPrefixesOrNoise) {
  const std::string inputs[] = {
      answer("code=" + std::string(code) + "&state=S-state_123"),
      "/?code=a%2Fb&state=S-state_123#x",
      answer("error=access_denied&error_description=AADSTS65001%3A+x&state=S-state_123"),
      "http://[::1]:51234/?code=a&state=b",
  };
  std::size_t ok = 0;
  for (const auto& input : inputs) {
    for (std::size_t n = 0; n <= input.size(); ++n) {
      const auto prefix = input.substr(0, n);
      const auto got = parse_redirect(prefix, redirect, state);
      if (got) {
        ++ok;
        EXPECT_FALSE(got->empty());
      } else {
        EXPECT_FALSE(got.error().message.empty());
      }
      // Suffixes too: what a cut paste may leave.
      (void)parse_redirect(input.substr(n), redirect, state);
    }
  }
  EXPECT_GT(ok, 0u);
  std::uint32_t seed = 12345;
  const std::string alphabet = "%+&=?#/:[]@ abcdefxyzCODEstate0123456789\r\n\x80\xff";
  for (int i = 0; i < 5000; ++i) {
    std::string noise = "http://localhost:51234/?";
    const std::size_t len = i % 40;
    for (std::size_t j = 0; j < len; ++j) {
      seed = seed * 1103515245u + 12345u;
      noise += alphabet[(seed >> 16) % alphabet.size()];
    }
    (void)parse_redirect(noise, redirect, state);
    (void)parse_redirect(noise.substr(23), redirect, state);
  }
}

}  // namespace
}  // namespace iop::auth
