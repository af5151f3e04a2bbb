#include "common/secret.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "common/log.hpp"

namespace iop {
namespace {

TEST(Secret, FormatsAsRedacted) {
  const Secret s("hunter2-refresh-token");
  EXPECT_EQ(fmt::format("token={}", s), "token=[redacted]");
}

TEST(Secret, NeverReachesALogLine) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::logger logger("test", sink);
  const Secret s("at.super-secret-access-token");
  logger.info("login for {} with {}", "alice@example.com", s);
  logger.flush();
  EXPECT_EQ(out.str().find("super-secret"), std::string::npos);
  EXPECT_NE(out.str().find("[redacted]"), std::string::npos);
}

TEST(Secret, CopiesMovesAndCompares) {
  Secret a("abc");
  Secret b = a;
  EXPECT_TRUE(a == b);
  Secret c = std::move(b);
  EXPECT_EQ(c.reveal(), "abc");
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move): moved-from is wiped
  EXPECT_FALSE(Secret("abc") == Secret("abd"));
  EXPECT_FALSE(Secret("abc") == Secret("abcd"));
  c = Secret("longer value");
  EXPECT_EQ(c.size(), 12u);
}

TEST(Log, JsonEscapesControlCharacters) {
  EXPECT_EQ(json_escape("a\"b\\c\nd\x01"), "a\\\"b\\\\c\\nd\\u0001");
}

}  // namespace
}  // namespace iop
