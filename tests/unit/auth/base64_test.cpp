#include "auth/base64.hpp"

#include <gtest/gtest.h>

namespace iop::auth {
namespace {

TEST(Base64, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    EXPECT_EQ(base64_decode(encoded), plain);
  }
}

TEST(Base64, RoundTripsBinary) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  EXPECT_EQ(base64_decode(base64_encode(all)), all);
}

TEST(Base64, RejectsNonCanonicalInput) {
  for (const char* bad : {"Zg", "Zg=", "Z===", "Zm9v\n", "Zm 9v", "Zg==Zg==", "=Zg=", "Zm9*"}) {
    EXPECT_EQ(base64_decode(bad), std::nullopt) << bad;
  }
  // RFC 4648 §3.5: bits left over before the padding must be zero ("Zg==" is "f"; "Zh==" and
  // "Zm9=" carry stray bits).
  for (const char* bad : {"Zh==", "Zm9=", "AGFsaWNlAHNlY3JldB=="}) {
    EXPECT_EQ(base64_decode(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(base64_decode("Zm8="), std::optional<std::string>("fo"));
}

}  // namespace
}  // namespace iop::auth
