// [storage] database as a PostgreSQL URL (issue #10): parsed by libpq's own parser, shown
// without secrets, refused when it carries a password.

#include <gtest/gtest.h>

#include "common/database_url.hpp"
#include "storage/database.hpp"
#include "storage/pg_database.hpp"
#include "storage/postgres.hpp"

namespace iop::storage::pg {
namespace {

TEST(PgUrlTest, BothSchemesArePostgresAndAPathIsNot) {
  EXPECT_TRUE(is_postgres_url("postgresql://u@h/db"));
  EXPECT_TRUE(is_postgres_url("postgres://h/db"));
  EXPECT_FALSE(is_postgres_url("/var/lib/imap-oauth2-proxy/credentials.db"));
  EXPECT_FALSE(is_postgres_url("credentials.db"));
  EXPECT_FALSE(is_postgres_url("postgresql:/h/db"));
}

TEST(PgUrlTest, TheShownFormHasUserHostPortAndDatabase) {
  const auto target =
      parse_url("postgresql://mail@db.example.org:5433/credentials?sslmode=verify-full");
  ASSERT_TRUE(target.has_value()) << target.error().message;
  EXPECT_EQ(target->shown, "postgresql://mail@db.example.org:5433/credentials");
  EXPECT_EQ(target->url, "postgresql://mail@db.example.org:5433/credentials?sslmode=verify-full");
}

TEST(PgUrlTest, APasswordInTheUrlIsRefusedWithoutRepeatingIt) {
  for (const char* url : {"postgresql://mail:hunter2secret@db/credentials",
                          "postgresql://mail@db/credentials?password=hunter2secret"}) {
    const auto target = parse_url(url);
    ASSERT_FALSE(target.has_value()) << url;
    EXPECT_EQ(target.error().code, Errc::config_error);
    EXPECT_NE(target.error().message.find("password_file"), std::string::npos)
        << target.error().message;
    EXPECT_EQ(target.error().message.find("hunter2secret"), std::string::npos)
        << target.error().message;
  }
}

TEST(PgUrlTest, AnUnparsableUrlIsAConfigErrorThatDoesNotQuoteIt) {
  // libpq's own messages quote the URL or the part it could not read: a password, here.
  for (const char* url : {"postgresql://mail@db/credentials?nosuchoption=1",
                          "postgresql://iop:hunter2secret@[::1:47615/iop",
                          "postgresql://iop:hunter2%zzsecret@db/iop"}) {
    const auto target = parse_url(url);
    ASSERT_FALSE(target.has_value()) << url;
    EXPECT_EQ(target.error().code, Errc::config_error);
    EXPECT_NE(target.error().message.find("postgresql://user@host"), std::string::npos)
        << target.error().message;
    EXPECT_EQ(target.error().message.find("hunter2"), std::string::npos) << target.error().message;
  }
}

TEST(PgUrlTest, TheKeyPassphraseIsRefusedInTheUrlToo) {
  const auto target = parse_url("postgresql://mail@db/credentials?sslpassword=hunter2secret");
  ASSERT_FALSE(target.has_value());
  EXPECT_EQ(target.error().message.find("hunter2secret"), std::string::npos);
}

TEST(PgUrlTest, BothEnginesHaveTheSameSchemaSteps) {
  // A step added to one list and not the other would make the versions mean different schemas.
  EXPECT_EQ(pg_schema_steps(), current_schema_version());
}

}  // namespace
}  // namespace iop::storage::pg
