// The PostgreSQL database (issue #10) against a real server the test starts (initdb into a
// temporary folder, a free port): connecting with the password from a file, the migrations
// applied once when instances start together, the version checks, the append-only log, and a
// server restart seen as a lost connection.

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "storage/credentials_store.hpp"
#include "storage/database.hpp"
#include "storage/pg_database.hpp"
#include "storage/postgres.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::storage {
namespace {

class PostgresDatabaseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (auto why = test::PostgresServer::unavailable()) {
      skip_reason_ = new std::string(*why);
      return;
    }
    server_ = new test::PostgresServer();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete skip_reason_;
    skip_reason_ = nullptr;
  }
  void SetUp() override {
    if (skip_reason_ != nullptr) {
      GTEST_SKIP() << *skip_reason_;
    }
    // Each test starts from an empty database.
    server_->query("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION iop");
    server_->start();
  }

  static pg::Target target() {
    auto t = pg::parse_url(server_->url());
    EXPECT_TRUE(t.has_value());
    return *t;
  }
  static Secret password() { return Secret(server_->password()); }

  static test::PostgresServer* server_;
  static std::string* skip_reason_;
};

test::PostgresServer* PostgresDatabaseTest::server_ = nullptr;
std::string* PostgresDatabaseTest::skip_reason_ = nullptr;

TEST_F(PostgresDatabaseTest, OpeningCreatesTheSchemaAtTheCurrentVersion) {
  auto db = open_pg_database(target(), password());
  ASSERT_TRUE(db.has_value()) << db.error().message;
  auto version = pg_schema_version(*db);
  ASSERT_TRUE(version.has_value()) << version.error().message;
  EXPECT_EQ(*version, current_schema_version());
  // The last step's column exists, with its default.
  EXPECT_EQ(server_->query("SELECT column_default FROM information_schema.columns WHERE "
                           "table_name = 'connection_log' AND column_name = 'event'"),
            "''::text");
}

TEST_F(PostgresDatabaseTest, InstancesStartingTogetherRunEachStepOnce) {
  // Eight openers on a new database at once: without the advisory lock two would run step 1
  // together and one would fail on "relation already exists".
  constexpr int instances = 8;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::vector<std::string> errors(instances);
  for (int i = 0; i < instances; ++i) {
    threads.emplace_back([&, i] {
      auto db = open_pg_database(target(), password());
      if (db) {
        ++ok;
      } else {
        errors[static_cast<std::size_t>(i)] = db.error().message;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(ok.load(), instances);
  EXPECT_EQ(server_->query("SELECT version FROM iop_schema_version"),
            std::to_string(current_schema_version()));
  EXPECT_EQ(server_->query("SELECT count(*) FROM iop_schema_version"), "1");
}

TEST_F(PostgresDatabaseTest, ReopeningChangesNothing) {
  ASSERT_TRUE(open_pg_database(target(), password()).has_value());
  server_->query("INSERT INTO meta (key, value) VALUES ('probe', '\\x01'::bytea)");
  auto again = open_pg_database(target(), password());
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_EQ(server_->query("SELECT count(*) FROM meta WHERE key = 'probe'"), "1");
}

TEST_F(PostgresDatabaseTest, ANewerSchemaIsRefusedWithTheWayOut) {
  ASSERT_TRUE(open_pg_database(target(), password()).has_value());
  server_->query("UPDATE iop_schema_version SET version = 99");
  auto db = open_pg_database(target(), password());
  ASSERT_FALSE(db.has_value());
  EXPECT_EQ(db.error().code, Errc::storage_unavailable);
  EXPECT_NE(db.error().message.find("newer"), std::string::npos) << db.error().message;
  EXPECT_NE(db.error().message.find("upgrade"), std::string::npos) << db.error().message;
}

TEST_F(PostgresDatabaseTest, AWrongPasswordIsAClearErrorThatDoesNotShowIt) {
  const Secret wrong("not-the-password-4711");
  auto db = open_pg_database(target(), wrong);
  ASSERT_FALSE(db.has_value());
  EXPECT_EQ(db.error().code, Errc::storage_unavailable);
  EXPECT_NE(db.error().message.find("password authentication failed"), std::string::npos)
      << db.error().message;
  EXPECT_NE(db.error().message.find("PGPASSFILE"), std::string::npos) << db.error().message;
  EXPECT_EQ(db.error().message.find("4711"), std::string::npos) << db.error().message;
  EXPECT_EQ(db.error().message.find(server_->password()), std::string::npos);
}

TEST_F(PostgresDatabaseTest, BytesRoundTripAndTheLogIsAppendOnly) {
  auto db = open_pg_database(target(), password());
  ASSERT_TRUE(db.has_value()) << db.error().message;
  const std::string blob("\x00\x01\xff\\x'\"\r\n", 9);
  ASSERT_TRUE(db->exec("INSERT INTO meta (key, value) VALUES ($1, $2)",
                       {pg::Param::text("blob"), pg::Param::bytes(blob)}));
  auto rows = db->exec("SELECT value FROM meta WHERE key = $1", {pg::Param::text("blob")});
  ASSERT_TRUE(rows.has_value()) << rows.error().message;
  ASSERT_EQ(rows->size(), 1);
  EXPECT_EQ(rows->bytes(0, 0), blob);

  ASSERT_TRUE(db->exec(
      "INSERT INTO connection_log (id, started_at_ms, ended_at_ms, client_address, client_port, "
      "listener, username, account, outcome, token_source, bytes_client_to_upstream, "
      "bytes_upstream_to_client, close_reason, prev_hash, hash) VALUES (1, 1, 2, '127.0.0.1', "
      "5, 'imap', 'u', 'a', 'ok', 'memory', 0, 0, '', '', 'h')"));
  auto update = db->exec("UPDATE connection_log SET outcome = 'auth_failed'");
  ASSERT_FALSE(update.has_value());
  EXPECT_NE(update.error().message.find("append-only"), std::string::npos)
      << update.error().message;
  auto remove = db->exec("DELETE FROM connection_log");
  ASSERT_FALSE(remove.has_value());
  EXPECT_EQ(server_->query("SELECT count(*) FROM connection_log"), "1");
}

TEST_F(PostgresDatabaseTest, AFailedStatementRollsTheTransactionBack) {
  auto db = open_pg_database(target(), password());
  ASSERT_TRUE(db.has_value()) << db.error().message;
  {
    auto tx = pg::Transaction::begin(*db);
    ASSERT_TRUE(tx.has_value()) << tx.error().message;
    ASSERT_TRUE(db->exec("INSERT INTO meta (key) VALUES ('kept?')"));
    ASSERT_FALSE(db->exec("INSERT INTO meta (key) VALUES ('kept?')"));  // duplicate key
    auto committed = tx->commit();
    ASSERT_FALSE(committed.has_value());
    EXPECT_NE(committed.error().message.find("rolled back"), std::string::npos)
        << committed.error().message;
  }
  EXPECT_EQ(server_->query("SELECT count(*) FROM meta WHERE key = 'kept?'"), "0");
}

TEST_F(PostgresDatabaseTest, ARestartedServerIsALostConnection) {
  auto db = open_pg_database(target(), password());
  ASSERT_TRUE(db.has_value()) << db.error().message;
  ASSERT_TRUE(db->healthy());
  server_->stop();
  server_->start();
  auto rows = db->exec("SELECT 1");
  ASSERT_FALSE(rows.has_value());
  EXPECT_FALSE(db->healthy());
  EXPECT_NE(rows.error().message.find("lost"), std::string::npos) << rows.error().message;
  // A new connection works at once.
  auto fresh = open_pg_database(target(), password());
  ASSERT_TRUE(fresh.has_value()) << fresh.error().message;
  EXPECT_TRUE(fresh->exec("SELECT 1").has_value());
}

TEST_F(PostgresDatabaseTest, LoginReadsDoNotWaitBehindAWriteTransaction) {
  const auto key = MasterKey::from_bytes(Secret(std::string(MasterKey::size, 'k'))).value();
  auto store = CredentialsStore::open(server_->url(), password(), key);
  ASSERT_TRUE(store.has_value()) << store.error().message;
  Credentials row;
  row.email = "ada@example.com";
  row.refresh_token = Secret("rt");
  row.local_password_hash = "old-hash";
  ASSERT_TRUE((*store)->upsert_account(row).has_value());

  // Another instance holds the row: this store's next write waits on the server, holding the
  // store's write mutex meanwhile.
  auto other = open_pg_database(target(), password());
  ASSERT_TRUE(other.has_value()) << other.error().message;
  ASSERT_TRUE(other->run("BEGIN"));
  ASSERT_TRUE(
      other->exec("SELECT 1 FROM mail_credentials WHERE email = 'ada@example.com' FOR UPDATE"));
  std::atomic<bool> written{false};
  std::thread writer([&] {
    EXPECT_TRUE((*store)->set_local_password_hash("ada@example.com", "new-hash").has_value());
    written = true;
  });
  ASSERT_TRUE(test::wait_until(
      [&] {
        return server_->query(
                   "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                   "'Lock' AND datname = current_database()") == "1";
      },
      std::chrono::seconds(10), "the store's write waiting on the row lock"));

  // Logins read the committed row on a pooled connection while that write waits.
  const auto record = (*store)->login_record("ada@example.com");
  ASSERT_TRUE(record.has_value()) << record.error().message;
  EXPECT_EQ(record->local_password_hash, "old-hash");
  const auto got = (*store)->get("ada@example.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_FALSE(written.load()) << "the reads waited for the write (10 s lock timeout)";

  ASSERT_TRUE(other->run("ROLLBACK"));
  writer.join();
  EXPECT_TRUE(written.load());
  EXPECT_EQ((*store)->login_record("ada@example.com")->local_password_hash, "new-hash");
}

}  // namespace
}  // namespace iop::storage
