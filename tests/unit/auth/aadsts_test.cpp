#include "auth/aadsts.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iop::auth {
namespace {

struct Expectation {
  int code;
  bool permanent;
  bool config;
};

class AadstsTable : public ::testing::TestWithParam<Expectation> {};

TEST_P(AadstsTable, ClassifiesAndExplains) {
  const auto& want = GetParam();
  const auto info = lookup_aadsts(want.code);
  ASSERT_TRUE(info.has_value()) << want.code;
  EXPECT_EQ(info->code, want.code);
  EXPECT_EQ(info->permanent, want.permanent) << want.code;
  EXPECT_EQ(info->config, want.config) << want.code;
  EXPECT_FALSE(info->permanent && info->config);
  EXPECT_GT(info->explanation.size(), 20u);
  // Operator-facing: a permanent failure says how to re-authorize, a config one names the
  // setting to check.
  if (info->permanent) {
    EXPECT_NE(info->explanation.find("account reauth"), std::string_view::npos) << want.code;
  }
  if (info->config) {
    EXPECT_NE(info->explanation.find("[oauth]"), std::string_view::npos) << want.code;
  }
}

INSTANTIATE_TEST_SUITE_P(
    KnownCodes, AadstsTable,
    ::testing::Values(Expectation{70008, true, false}, Expectation{700082, true, false},
                      Expectation{70043, true, false}, Expectation{50173, true, false},
                      Expectation{65001, true, false}, Expectation{90094, true, false},
                      Expectation{70000, true, false}, Expectation{9002313, true, false},
                      Expectation{54005, true, false}, Expectation{50076, true, false},
                      Expectation{50079, true, false}, Expectation{50126, true, false},
                      Expectation{53003, true, false}, Expectation{700016, false, true},
                      Expectation{7000215, false, true}, Expectation{7000222, false, true},
                      Expectation{7000218, false, true}, Expectation{500011, false, true},
                      Expectation{50196, false, false}, Expectation{90033, false, false}),
    [](const auto& p) { return std::to_string(p.param.code); });

TEST(Aadsts, InactivityExplainsTheNinetyDayLimit) {
  const auto info = lookup_aadsts(700082);
  ASSERT_TRUE(info);
  EXPECT_NE(info->explanation.find("90 days"), std::string_view::npos);
}

TEST(Aadsts, UnknownCodesAreNotGuessed) {
  EXPECT_FALSE(lookup_aadsts(0));
  EXPECT_FALSE(lookup_aadsts(-1));
  EXPECT_FALSE(lookup_aadsts(12345));
  EXPECT_FALSE(lookup_aadsts(7000216));
}

TEST(Aadsts, ExtractsTheFirstCode) {
  EXPECT_EQ(extract_aadsts("AADSTS700082: The refresh token has expired due to inactivity."),
            700082);
  EXPECT_EQ(extract_aadsts("x AADSTS50173: a\r\nTrace ID: 1\r\nAADSTS70008"), 50173);
  EXPECT_EQ(extract_aadsts("AADSTS: no digits, then AADSTS65001 later"), 65001);
  EXPECT_EQ(extract_aadsts("AADSTS9002313"), 9002313);
}

TEST(Aadsts, ExtractReturnsZeroWithoutACode) {
  EXPECT_EQ(extract_aadsts(""), 0);
  EXPECT_EQ(extract_aadsts("invalid_grant"), 0);
  EXPECT_EQ(extract_aadsts("AADSTS"), 0);
  EXPECT_EQ(extract_aadsts("aadsts70008"), 0) << "Microsoft writes the prefix in capitals";
}

TEST(Aadsts, ExtractDoesNotOverflowOnLongDigitRuns) {
  const int code = extract_aadsts("AADSTS99999999999999999999");
  EXPECT_GT(code, 0);
  EXPECT_LE(code, 999999999);
}

}  // namespace
}  // namespace iop::auth
