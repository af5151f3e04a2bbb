#include "common/email.hpp"

#include <gtest/gtest.h>

namespace iop {
namespace {

TEST(Email, NormalizesToLowerCase) {
  EXPECT_EQ(normalize_email("Alice.Smith+tag@Example.COM").value(), "alice.smith+tag@example.com");
  EXPECT_EQ(normalize_email("a@b.co").value(), "a@b.co");
}

TEST(Email, RejectsWhatIsNotAnEmail) {
  for (const char* bad : {"",
                          "alice",
                          "@example.com",
                          "alice@",
                          "alice@localhost",
                          "al ice@example.com",
                          "alice@exa mple.com",
                          "\"alice\"@example.com",
                          "alice@example..com",
                          ".alice@example.com",
                          "alice.@example.com",
                          "al..ice@example.com",
                          "alice@.example.com",
                          "alice@example.com.",
                          "alice@-example.com",
                          "alice@exam_ple.com",
                          "alice\r\n@example.com",
                          "alice@example.com\n",
                          "a<b>@example.com",
                          "alice@@example.com"}) {
    const auto r = normalize_email(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_NE(r.error().message.find("not an email address"), std::string::npos);
  }
}

TEST(Email, RejectsOverlongAddresses) {
  EXPECT_FALSE(normalize_email(std::string(65, 'a') + "@example.com").has_value());
  EXPECT_FALSE(normalize_email("a@" + std::string(250, 'b') + ".com").has_value());
}

}  // namespace
}  // namespace iop
