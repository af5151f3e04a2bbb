#include "auth/password_hash.hpp"

#include <gtest/gtest.h>

namespace iop::auth {
namespace {

// Small parameters keep the suite fast; the format and checks are the same.
const ScryptParams fast{10, 8, 1};

TEST(PasswordHash, VerifiesTheRightPasswordOnly) {
  const auto hash = hash_password(Secret("correct horse"), fast);
  ASSERT_TRUE(hash.has_value());
  EXPECT_TRUE(hash->starts_with("$scrypt$ln=10,r=8,p=1$"));
  EXPECT_EQ(hash->find("correct horse"), std::string::npos);
  EXPECT_TRUE(verify_password(Secret("correct horse"), *hash));
  EXPECT_FALSE(verify_password(Secret("correct horsE"), *hash));
  EXPECT_FALSE(verify_password(Secret(""), *hash));
}

TEST(PasswordHash, SaltsEachHash) {
  EXPECT_NE(hash_password(Secret("pw"), fast).value(), hash_password(Secret("pw"), fast).value());
}

// The one test that pays for the real parameters (128 MiB, well under a second per hash on an
// idle core): it checks that OpenSSL's memory limit is raised enough for them.
TEST(PasswordHash, DefaultParametersFollowCurrentGuidance) {
  const ScryptParams defaults;
  EXPECT_GE(defaults.log2_n, 17);
  EXPECT_GE(defaults.r, 8);
  const auto hash = hash_password(Secret("pw"));
  ASSERT_TRUE(hash.has_value()) << hash.error().message;
  EXPECT_TRUE(hash->starts_with("$scrypt$ln=17,r=8,p=1$"));
  EXPECT_TRUE(verify_password(Secret("pw"), *hash));
  EXPECT_FALSE(needs_rehash(*hash, defaults));
}

TEST(PasswordHash, ReadsParametersAndTellsWhenToRehash) {
  const auto old_hash = hash_password(Secret("pw"), fast).value();
  const auto params = hash_parameters(old_hash);
  ASSERT_TRUE(params.has_value());
  EXPECT_EQ(params->log2_n, 10);
  EXPECT_EQ(params->r, 8);
  EXPECT_EQ(params->p, 1);
  EXPECT_FALSE(needs_rehash(old_hash, fast));
  EXPECT_TRUE(needs_rehash(old_hash, ScryptParams{11, 8, 1}));
  EXPECT_TRUE(needs_rehash(old_hash, ScryptParams{10, 16, 1}));
  EXPECT_TRUE(needs_rehash(old_hash, ScryptParams{10, 8, 2}));
  EXPECT_FALSE(needs_rehash(old_hash, ScryptParams{9, 8, 1})) << "never downgraded";
  EXPECT_FALSE(hash_parameters("$scrypt$ln=30,r=8,p=1$AAAA$AAAA").has_value());
  EXPECT_TRUE(needs_rehash("garbage", fast));
}

TEST(PasswordHash, RejectsEmptyPassword) {
  EXPECT_EQ(hash_password(Secret(""), fast).error().code, Errc::invalid_argument);
}

TEST(PasswordHash, MalformedOrHostileHashesNeverMatch) {
  const auto good = hash_password(Secret("pw"), fast).value();
  auto tampered = good;
  tampered.back() = tampered.back() == 'A' ? 'B' : 'A';
  for (const std::string& bad :
       {std::string(""), std::string("pw"), std::string("$scrypt$"), tampered,
        std::string("$scrypt$ln=30,r=8,p=1$AAAA$AAAA"),  // 1 GiB * 8: refused, not attempted
        std::string("$scrypt$ln=10,r=8,p=1$!!!!$AAAA"),
        std::string("$bcrypt$ln=10,r=8,p=1$AAAA$AAAA"), good + "$extra"}) {
    EXPECT_FALSE(verify_password(Secret("pw"), bad)) << bad;
  }
}

}  // namespace
}  // namespace iop::auth
