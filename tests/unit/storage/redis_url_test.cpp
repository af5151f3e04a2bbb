// parse_redis_url: the accepted forms and one case per reject reason.

#include <gtest/gtest.h>

#include <string>

#include "storage/token_cache.hpp"

namespace iop::storage {
namespace {

struct ValidCase {
  const char* url;
  const char* host;
  int port;
  int db;
  const char* password;
};

class RedisUrlValid : public testing::TestWithParam<ValidCase> {};

TEST_P(RedisUrlValid, Parses) {
  const ValidCase& c = GetParam();
  const auto address = parse_redis_url(c.url);
  ASSERT_TRUE(address.has_value()) << c.url << ": " << address.error().message;
  EXPECT_EQ(address->host, c.host);
  EXPECT_EQ(address->port, c.port);
  EXPECT_EQ(address->db, c.db);
  EXPECT_EQ(address->password.reveal(), c.password);
}

INSTANTIATE_TEST_SUITE_P(
    Table, RedisUrlValid,
    testing::Values(ValidCase{"redis://localhost", "localhost", 6379, 0, ""},
                    ValidCase{"redis://127.0.0.1:6380", "127.0.0.1", 6380, 0, ""},
                    ValidCase{"redis://cache.internal:6379/3", "cache.internal", 6379, 3, ""},
                    ValidCase{"redis://host/", "host", 6379, 0, ""},
                    ValidCase{"redis://host/0", "host", 6379, 0, ""},
                    ValidCase{"redis://:s3cret@host:7000/2", "host", 7000, 2, "s3cret"},
                    ValidCase{"redis://default:s3cret@host", "host", 6379, 0, "s3cret"},
                    ValidCase{"redis://:@host", "host", 6379, 0, ""},
                    ValidCase{"redis://:p%40ss%2Fw%3Ard@host", "host", 6379, 0, "p@ss/w:rd"},
                    ValidCase{"redis://:p@ss@host", "host", 6379, 0, "p@ss"},
                    ValidCase{"redis://:pa:ss@host", "host", 6379, 0, "pa:ss"},
                    ValidCase{"redis://[::1]", "::1", 6379, 0, ""},
                    ValidCase{"redis://[::1]:6390/5", "::1", 6390, 5, ""},
                    ValidCase{"redis://:pw@[fe80::1]:1", "fe80::1", 1, 0, "pw"},
                    ValidCase{"REDIS://Host:65535", "Host", 65535, 0, ""}));

struct InvalidCase {
  const char* url;
  const char* reason_part;  // a word the message must contain
};

class RedisUrlInvalid : public testing::TestWithParam<InvalidCase> {};

TEST_P(RedisUrlInvalid, RejectsWithReason) {
  const InvalidCase& c = GetParam();
  const auto address = parse_redis_url(c.url);
  ASSERT_FALSE(address.has_value()) << c.url;
  EXPECT_EQ(address.error().code, Errc::config_error);
  EXPECT_NE(address.error().message.find(c.reason_part), std::string::npos)
      << c.url << " -> " << address.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Table, RedisUrlInvalid,
    testing::Values(
        InvalidCase{"", "redis://"}, InvalidCase{"localhost:6379", "redis://"},
        InvalidCase{"http://localhost", "redis://"}, InvalidCase{"rediss://localhost", "TLS"},
        InvalidCase{"unix:///run/redis.sock", "unix"}, InvalidCase{"redis://", "host"},
        InvalidCase{"redis://:6379", "host"}, InvalidCase{"redis://:pw@", "host"},
        InvalidCase{"redis://[]:6379", "host"}, InvalidCase{"redis://host:", "port"},
        InvalidCase{"redis://host:0", "port"}, InvalidCase{"redis://host:65536", "port"},
        InvalidCase{"redis://host:-1", "port"}, InvalidCase{"redis://host:12ab", "port"},
        InvalidCase{"redis://host:99999999999999999999", "port"},
        InvalidCase{"redis://host/x", "database"}, InvalidCase{"redis://host/-1", "database"},
        InvalidCase{"redis://host/1/2", "database"}, InvalidCase{"redis://host?db=1", "query"},
        InvalidCase{"redis://host#frag", "query"}, InvalidCase{"redis://secret@host", "':'"},
        InvalidCase{"redis://:bad%zzescape@host", "%-escape"},
        InvalidCase{"redis://:bad%4@host", "%-escape"}, InvalidCase{"redis://[::1", "']'"},
        InvalidCase{"redis://[::1]x", "IPv6"}, InvalidCase{"redis://[::1/0]", "']'"}));

TEST(RedisUrl, MessagesNeverHoldThePassword) {
  for (const char* url : {"redis://:hunter2@host:notaport", "redis://:hunter2@host/db",
                          "redis://user:hunter2%zz@host", "redis://:hunter2@"}) {
    const auto address = parse_redis_url(url);
    ASSERT_FALSE(address.has_value()) << url;
    EXPECT_EQ(address.error().message.find("hunter2"), std::string::npos) << url;
  }
}

}  // namespace
}  // namespace iop::storage
