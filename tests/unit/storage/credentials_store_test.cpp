#include "storage/credentials_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "storage/database.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_db.hpp"

namespace iop::storage {
namespace {

namespace fs = std::filesystem;
using test::RawDb;

// Secret has constructors from std::string and std::string_view, so a literal is ambiguous.
Secret secret_of(std::string_view value) { return Secret(value); }

MasterKey key_of(char fill) {
  auto key = MasterKey::from_bytes(Secret(std::string(MasterKey::size, fill)));
  EXPECT_TRUE(key.has_value());
  return std::move(*key);
}

Credentials oauth_row(const std::string& email, const std::string& refresh) {
  Credentials row;
  row.email = email;
  row.use_oauth = true;
  row.access_token = secret_of("access-" + email);
  row.refresh_token = Secret(refresh);
  row.token_expiry = 1'700'000'000;
  row.refreshed_at_ms = 1'000;
  return row;
}

class CredentialsStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<CredentialsStore> open_store(char key_fill = 'k') {
    auto store = CredentialsStore::open(db_path(), key_of(key_fill));
    EXPECT_TRUE(store.has_value()) << store.error().message;
    return store ? std::move(*store) : nullptr;
  }
  [[nodiscard]] fs::path db_path() const { return dir_.path() / "credentials.db"; }

  test::TempDir dir_;
};

TEST_F(CredentialsStoreTest, CreatesSchemaWithWalAndPrivateFile) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  RawDb raw(db_path());
  EXPECT_EQ(raw.query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(current_schema_version()));
  EXPECT_EQ(raw.query("SELECT count(*) FROM sqlite_master WHERE name = 'mail_credentials'"), "1");
  EXPECT_EQ(raw.query("SELECT count(*) FROM meta WHERE key = 'key_check'"), "1");
  EXPECT_EQ(fs::status(db_path()).permissions() & (fs::perms::group_all | fs::perms::others_all),
            fs::perms::none);
}

TEST_F(CredentialsStoreTest, ReopenIsIdempotent) {
  {
    auto store = open_store();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-a")).has_value());
  }
  for (int i = 0; i < 2; ++i) {
    auto store = open_store();
    ASSERT_NE(store, nullptr);
    auto row = store->get("a@x.com");
    ASSERT_TRUE(row.has_value()) << row.error().message;
    EXPECT_EQ(row->refresh_token.reveal(), "rt-a");
  }
  RawDb raw(db_path());
  EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(current_schema_version()));
  EXPECT_EQ(raw.query("SELECT count(*) FROM meta"), "1");
}

TEST_F(CredentialsStoreTest, NewerSchemaVersionIsRefused) {
  ASSERT_NE(open_store(), nullptr);
  RawDb(db_path()).exec("PRAGMA user_version = 99");
  auto store = CredentialsStore::open(db_path(), key_of('k'));
  ASSERT_FALSE(store.has_value());
  EXPECT_NE(store.error().message.find("99"), std::string::npos);
  EXPECT_NE(store.error().message.find("newer"), std::string::npos);
  EXPECT_NE(store.error().message.find(db_path().string()), std::string::npos);
}

TEST_F(CredentialsStoreTest, WrongMasterKeyIsRefused) {
  {
    auto store = open_store('k');
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-a")).has_value());
  }
  auto store = CredentialsStore::open(db_path(), key_of('j'));
  ASSERT_FALSE(store.has_value());
  EXPECT_EQ(store.error().code, Errc::key_error);
  EXPECT_NE(store.error().message.find("does not match"), std::string::npos);
  EXPECT_NE(store.error().message.find(db_path().string()), std::string::npos);
  // The right key still works.
  EXPECT_NE(open_store('k'), nullptr);
}

TEST_F(CredentialsStoreTest, UpsertGetList) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);

  Credentials a = oauth_row("a@x.com", "rt-a");
  a.local_password_hash = "$argon2id$hash-a";
  a.upstream_host = "imap.example.net";
  a.upstream_port = 993;
  ASSERT_TRUE(store->upsert_account(a).has_value());

  Credentials b;
  b.email = "b@x.com";
  b.use_oauth = false;
  b.password = secret_of("upstream-password");
  ASSERT_TRUE(store->upsert_account(b).has_value());

  auto got = store->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->email, "a@x.com");
  EXPECT_TRUE(got->use_oauth);
  EXPECT_EQ(got->access_token.reveal(), "access-a@x.com");
  EXPECT_EQ(got->refresh_token.reveal(), "rt-a");
  EXPECT_TRUE(got->password.empty());
  EXPECT_EQ(got->token_expiry, 1'700'000'000);
  EXPECT_EQ(got->refreshed_at_ms, 1'000);
  EXPECT_EQ(got->local_password_hash, "$argon2id$hash-a");
  EXPECT_EQ(got->upstream_host, "imap.example.net");
  EXPECT_EQ(got->upstream_port, 993);
  EXPECT_EQ(got->status, AccountStatus::active);
  EXPECT_GT(got->created_at, 0);
  EXPECT_GE(got->updated_at, got->created_at);

  auto got_b = store->get("b@x.com");
  ASSERT_TRUE(got_b.has_value()) << got_b.error().message;
  EXPECT_FALSE(got_b->use_oauth);
  EXPECT_EQ(got_b->password.reveal(), "upstream-password");
  EXPECT_TRUE(got_b->access_token.empty());
  EXPECT_TRUE(got_b->refresh_token.empty());

  auto missing = store->get("nobody@x.com");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::not_found);

  auto list = store->list();
  ASSERT_TRUE(list.has_value()) << list.error().message;
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].email, "a@x.com");
  EXPECT_TRUE((*list)[0].has_local_password);
  EXPECT_EQ((*list)[0].upstream_host, "imap.example.net");
  EXPECT_EQ((*list)[0].upstream_port, 993);
  EXPECT_EQ((*list)[0].refreshed_at_ms, 1'000);
  EXPECT_EQ((*list)[1].email, "b@x.com");
  EXPECT_FALSE((*list)[1].use_oauth);
  EXPECT_FALSE((*list)[1].has_local_password);
}

TEST_F(CredentialsStoreTest, SecretsAreNotStoredInClearAndEmptyIsNull) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-plain-marker")).has_value());
  RawDb raw(db_path());
  EXPECT_EQ(raw.query("SELECT count(*) FROM mail_credentials WHERE instr(refresh_token, "
                      "CAST('rt-plain-marker' AS BLOB)) > 0"),
            "0");
  EXPECT_EQ(raw.query("SELECT typeof(refresh_token) FROM mail_credentials"), "blob");
  EXPECT_EQ(raw.query("SELECT password IS NULL FROM mail_credentials"), "1");
  EXPECT_EQ(raw.query("SELECT local_password_hash IS NULL FROM mail_credentials"), "1");
}

TEST_F(CredentialsStoreTest, UpsertKeepsLocalHashAndCreatedAtAndReactivates) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-old")).has_value());
  ASSERT_TRUE(store->set_local_password_hash("a@x.com", "$argon2id$local").has_value());
  ASSERT_TRUE(store->mark_needs_reauth("a@x.com", "invalid_grant").has_value());
  RawDb(db_path()).exec("UPDATE mail_credentials SET created_at = 12345");

  Credentials again = oauth_row("a@x.com", "rt-new");
  again.local_password_hash = "$argon2id$ignored";
  again.refreshed_at_ms = 5'000;
  ASSERT_TRUE(store->upsert_account(again).has_value());

  auto got = store->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->refresh_token.reveal(), "rt-new");
  EXPECT_EQ(got->refreshed_at_ms, 5'000);
  EXPECT_EQ(got->local_password_hash, "$argon2id$local");
  EXPECT_EQ(got->created_at, 12345);
  EXPECT_EQ(got->status, AccountStatus::active);
  EXPECT_TRUE(got->status_reason.empty());
}

TEST_F(CredentialsStoreTest, ProviderSettingsAndClientCredentialsRoundTripSealed) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  Credentials app = oauth_row("app@x.com", "");
  app.provider = "microsoft-app";
  app.tenant = "contoso.com";
  app.client_id = "client-123";
  app.client_secret = secret_of("cs-plain-marker");
  ASSERT_TRUE(store->upsert_account(app).has_value());
  Credentials shared = oauth_row("shared@x.com", "rt-shared");
  shared.provider = "microsoft";
  shared.signed_in_as = "alice@x.com";
  shared.client_certificate = secret_of("-----BEGIN CERTIFICATE-----cert-plain-marker");
  ASSERT_TRUE(store->upsert_account(shared).has_value());

  auto got = store->get("app@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->provider, "microsoft-app");
  EXPECT_EQ(got->tenant, "contoso.com");
  EXPECT_EQ(got->client_id, "client-123");
  EXPECT_EQ(got->client_secret.reveal(), "cs-plain-marker");
  EXPECT_TRUE(got->client_certificate.empty());
  EXPECT_TRUE(got->signed_in_as.empty());
  got = store->get("shared@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->signed_in_as, "alice@x.com");
  EXPECT_EQ(got->client_certificate.reveal(), "-----BEGIN CERTIFICATE-----cert-plain-marker");

  const auto listed = store->list().value();
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].provider, "microsoft-app");
  EXPECT_EQ(listed[0].tenant, "contoso.com");
  EXPECT_EQ(listed[1].signed_in_as, "alice@x.com");

  RawDb raw(db_path());
  EXPECT_EQ(raw.query("SELECT count(*) FROM mail_credentials WHERE instr(client_secret, "
                      "CAST('cs-plain-marker' AS BLOB)) > 0 OR instr(client_certificate, "
                      "CAST('cert-plain-marker' AS BLOB)) > 0"),
            "0");
  // Sealed for its own row and column: moving it elsewhere does not decrypt.
  raw.exec(
      "UPDATE mail_credentials SET client_secret = (SELECT client_secret FROM mail_credentials "
      "WHERE email = 'app@x.com') WHERE email = 'shared@x.com'");
  EXPECT_EQ(store->get("shared@x.com").error().code, Errc::credentials_corrupt);
  EXPECT_TRUE(store->get("app@x.com").has_value());
}

TEST_F(CredentialsStoreTest, UpsertRejectsEmptyEmail) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  auto rc = store->upsert_account(oauth_row("", "rt"));
  ASSERT_FALSE(rc.has_value());
  EXPECT_EQ(rc.error().code, Errc::invalid_argument);
}

TEST_F(CredentialsStoreTest, UpdateTokensWithoutRotationKeepsRefreshToken) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-a")).has_value());
  ASSERT_TRUE(store->mark_needs_reauth("a@x.com", "transient").has_value());

  TokenUpdate update;
  update.access_token = secret_of("access-2");
  update.token_expiry = 1'700'003'600;
  update.refreshed_at_ms = 2'000;
  auto applied = store->update_tokens("a@x.com", update);
  ASSERT_TRUE(applied.has_value()) << applied.error().message;
  EXPECT_TRUE(*applied);

  auto got = store->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->access_token.reveal(), "access-2");
  EXPECT_EQ(got->refresh_token.reveal(), "rt-a");
  EXPECT_EQ(got->token_expiry, 1'700'003'600);
  EXPECT_EQ(got->refreshed_at_ms, 2'000);
  EXPECT_EQ(got->status, AccountStatus::active);
  EXPECT_TRUE(got->status_reason.empty());
}

TEST_F(CredentialsStoreTest, UpdateTokensWithRotationAndStaleUpdateSkipped) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-1")).has_value());

  TokenUpdate newer;
  newer.access_token = secret_of("access-3");
  newer.token_expiry = 3;
  newer.refresh_token = secret_of("rt-3");
  newer.refreshed_at_ms = 3'000;
  auto applied = store->update_tokens("a@x.com", newer);
  ASSERT_TRUE(applied.has_value()) << applied.error().message;
  EXPECT_TRUE(*applied);

  // A refresh obtained earlier but committed later (a slow retry) must not win.
  TokenUpdate stale;
  stale.access_token = secret_of("access-2");
  stale.token_expiry = 2;
  stale.refresh_token = secret_of("rt-2");
  stale.refreshed_at_ms = 2'000;
  auto skipped = store->update_tokens("a@x.com", stale);
  ASSERT_TRUE(skipped.has_value()) << skipped.error().message;
  EXPECT_FALSE(*skipped);

  // Same timestamp is not newer either.
  stale.refreshed_at_ms = 3'000;
  auto same = store->update_tokens("a@x.com", stale);
  ASSERT_TRUE(same.has_value());
  EXPECT_FALSE(*same);

  auto got = store->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->refresh_token.reveal(), "rt-3");
  EXPECT_EQ(got->access_token.reveal(), "access-3");
  EXPECT_EQ(got->token_expiry, 3);
  EXPECT_EQ(got->refreshed_at_ms, 3'000);
}

TEST_F(CredentialsStoreTest, UpdateTokensUnknownAccount) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  TokenUpdate update;
  update.access_token = secret_of("x");
  update.refreshed_at_ms = 1;
  auto rc = store->update_tokens("nobody@x.com", update);
  ASSERT_FALSE(rc.has_value());
  EXPECT_EQ(rc.error().code, Errc::not_found);
}

TEST_F(CredentialsStoreTest, SecondConnectionSeesUpdatesAndRespectsOrder) {
  auto first = open_store();
  auto second = open_store();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(first->upsert_account(oauth_row("a@x.com", "rt-1")).has_value());

  TokenUpdate newer;
  newer.access_token = secret_of("access-5");
  newer.refresh_token = secret_of("rt-5");
  newer.refreshed_at_ms = 5'000;
  ASSERT_EQ(second->update_tokens("a@x.com", newer), true);

  TokenUpdate stale = newer;
  stale.refresh_token = secret_of("rt-4");
  stale.refreshed_at_ms = 4'000;
  ASSERT_EQ(first->update_tokens("a@x.com", stale), false);

  auto got = first->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->refresh_token.reveal(), "rt-5");
}

TEST_F(CredentialsStoreTest, ConcurrentUpdatesKeepTheNewest) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-0")).has_value());

  constexpr int threads = 4;
  constexpr int per_thread = 25;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&store, t] {
      for (int i = 0; i < per_thread; ++i) {
        const int stamp = 2 + i * threads + t;  // unique across threads
        TokenUpdate update;
        update.access_token = secret_of("access-" + std::to_string(stamp));
        update.refresh_token = secret_of("rt-" + std::to_string(stamp));
        update.refreshed_at_ms = 1'000 + stamp;
        auto rc = store->update_tokens("a@x.com", update);
        EXPECT_TRUE(rc.has_value()) << rc.error().message;
      }
    });
  }
  for (auto& w : workers) {
    w.join();
  }
  const int newest = 2 + (per_thread - 1) * threads + (threads - 1);
  auto got = store->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->refreshed_at_ms, 1'000 + newest);
  EXPECT_EQ(got->refresh_token.reveal(), "rt-" + std::to_string(newest));
  EXPECT_EQ(got->access_token.reveal(), "access-" + std::to_string(newest));
}

TEST_F(CredentialsStoreTest, MarkNeedsReauthKeepsSecrets) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-a")).has_value());
  ASSERT_TRUE(store->mark_needs_reauth("a@x.com", "AADSTS70008: expired").has_value());

  auto got = store->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->status, AccountStatus::needs_reauth);
  EXPECT_EQ(got->status_reason, "AADSTS70008: expired");
  EXPECT_EQ(got->refresh_token.reveal(), "rt-a");
  EXPECT_EQ(got->access_token.reveal(), "access-a@x.com");

  auto list = store->list();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].status, AccountStatus::needs_reauth);
  EXPECT_EQ((*list)[0].status_reason, "AADSTS70008: expired");

  auto missing = store->mark_needs_reauth("nobody@x.com", "x");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

TEST_F(CredentialsStoreTest, SetLocalPasswordHash) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-a")).has_value());
  ASSERT_TRUE(store->set_local_password_hash("a@x.com", "$argon2id$h").has_value());
  EXPECT_EQ(store->get("a@x.com")->local_password_hash, "$argon2id$h");
  ASSERT_TRUE(store->set_local_password_hash("a@x.com", "").has_value());
  EXPECT_EQ(store->get("a@x.com")->local_password_hash, "");
  EXPECT_FALSE((*store->list())[0].has_local_password);
  EXPECT_EQ(store->set_local_password_hash("nobody@x.com", "h").error().code, Errc::not_found);
}

TEST_F(CredentialsStoreTest, Remove) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-a")).has_value());
  ASSERT_TRUE(store->upsert_account(oauth_row("b@x.com", "rt-b")).has_value());
  EXPECT_EQ(store->remove("a@x.com"), true);
  EXPECT_EQ(store->remove("a@x.com"), false);
  EXPECT_EQ(store->get("a@x.com").error().code, Errc::not_found);
  EXPECT_TRUE(store->get("b@x.com").has_value());
  EXPECT_EQ(store->list()->size(), 1u);
}

TEST_F(CredentialsStoreTest, CiphertextSwappedFromAnotherAccountIsCorrupt) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-secret-a")).has_value());
  ASSERT_TRUE(store->upsert_account(oauth_row("b@x.com", "rt-secret-b")).has_value());

  RawDb(db_path()).exec(
      "UPDATE mail_credentials SET refresh_token = (SELECT refresh_token FROM mail_credentials "
      "WHERE email = 'b@x.com') WHERE email = 'a@x.com'");

  auto a = store->get("a@x.com");
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code, Errc::credentials_corrupt);
  EXPECT_NE(a.error().message.find("a@x.com"), std::string::npos);
  EXPECT_NE(a.error().message.find("refresh_token"), std::string::npos);
  EXPECT_EQ(a.error().message.find("rt-secret"), std::string::npos);

  auto b = store->get("b@x.com");
  ASSERT_TRUE(b.has_value()) << b.error().message;
  EXPECT_EQ(b->refresh_token.reveal(), "rt-secret-b");

  // Listing reads no secrets, so it still shows both accounts.
  auto list = store->list();
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(list->size(), 2u);

  // Re-adding the account repairs it.
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-secret-a2")).has_value());
  auto repaired = store->get("a@x.com");
  ASSERT_TRUE(repaired.has_value()) << repaired.error().message;
  EXPECT_EQ(repaired->refresh_token.reveal(), "rt-secret-a2");
}

TEST_F(CredentialsStoreTest, CiphertextMovedToAnotherColumnIsCorrupt) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(oauth_row("a@x.com", "rt-a")).has_value());
  RawDb(db_path()).exec("UPDATE mail_credentials SET password = refresh_token");

  auto a = store->get("a@x.com");
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code, Errc::credentials_corrupt);
  EXPECT_NE(a.error().message.find("password"), std::string::npos);
}

TEST_F(CredentialsStoreTest, StatusCheckConstraint) {
  ASSERT_NE(open_store(), nullptr);
  RawDb raw(db_path());
  raw.exec(
      "INSERT INTO mail_credentials (email, use_oauth, created_at, updated_at) "
      "VALUES ('c@x.com', 1, 0, 0)");
  EXPECT_EQ(raw.query("SELECT status FROM mail_credentials WHERE email = 'c@x.com'"), "active");
  char* err = nullptr;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(db_path().c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  EXPECT_EQ(
      sqlite3_exec(db, "UPDATE mail_credentials SET status = 'bogus'", nullptr, nullptr, &err),
      SQLITE_CONSTRAINT);
  sqlite3_free(err);
  sqlite3_close_v2(db);
}

// --- Row MAC (issue #7 item 4): the columns deciding where a secret goes are authenticated ---

// An account using every decisive column, so an edit of any of them changes a value in use.
Credentials full_row(const std::string& email) {
  Credentials row = oauth_row(email, "rt-" + email);
  row.upstream_host = "imap.example.net";
  row.upstream_port = 993;
  row.provider = "microsoft";
  row.tenant = "contoso.com";
  row.client_id = "client-123";
  row.signed_in_as = "owner@x.com";
  return row;
}

// get() and login_record() alike.
template <typename T>
void expect_untrusted(const Result<T>& got, const std::string& email) {
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, Errc::credentials_corrupt);
  EXPECT_NE(got.error().message.find(email), std::string::npos) << got.error().message;
  EXPECT_NE(got.error().message.find("row MAC"), std::string::npos) << got.error().message;
  EXPECT_NE(got.error().message.find("account remove " + email), std::string::npos)
      << got.error().message;
}

bool listed_as_verified(CredentialsStore& store, const std::string& email) {
  // Named: a range-for over list().value() would iterate a destroyed temporary.
  const auto accounts = store.list();
  EXPECT_TRUE(accounts.has_value());
  for (const auto& a : accounts.value()) {
    if (a.email == email) {
      return a.verified;
    }
  }
  ADD_FAILURE() << email << " not listed";
  return false;
}

TEST_F(CredentialsStoreTest, LoginRecordHasWhatALoginNeedsAndNoSecret) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(full_row("a@x.com")).has_value());
  ASSERT_TRUE(store->set_local_password_hash("a@x.com", "$scrypt$owner").has_value());
  // Twice: the second read runs the statement prepared by the first.
  for (int i = 0; i < 2; ++i) {
    const auto got = store->login_record("a@x.com");
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_EQ(got->email, "a@x.com");
    EXPECT_EQ(got->local_password_hash, "$scrypt$owner");
    EXPECT_EQ(got->upstream_host, "imap.example.net");
    EXPECT_EQ(got->upstream_port, 993);
    EXPECT_EQ(got->provider, "microsoft");
  }
  // A write by another connection between reads is seen: the cached statement is reset after
  // each read, so it holds no read transaction (an old snapshot) open.
  auto other = open_store();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->set_local_password_hash("a@x.com", "$scrypt$changed").has_value());
  EXPECT_EQ(store->login_record("a@x.com")->local_password_hash, "$scrypt$changed");
  const auto missing = store->login_record("nobody@x.com");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

struct Tamper {
  const char* what;
  const char* set;  // the SET clause of a raw UPDATE on a@x.com
  bool needs_reauth_first = false;
};

TEST_F(CredentialsStoreTest, EditingAnyDecisiveColumnMakesOnlyThatAccountCorrupt) {
  const std::vector<Tamper> edits = {
      {"upstream_host", "upstream_host = 'imap.attacker.example'"},
      {"upstream_host cleared", "upstream_host = NULL"},
      {"upstream_port", "upstream_port = 4993"},
      {"provider", "provider = 'google'"},
      {"tenant", "tenant = 'attacker.onmicrosoft.com'"},
      {"client_id", "client_id = 'attacker-client'"},
      {"signed_in_as", "signed_in_as = 'mallory@x.com'"},
      {"use_oauth", "use_oauth = 0"},
      {"local_password_hash", "local_password_hash = '$scrypt$attacker'"},
      {"local_password_hash cleared", "local_password_hash = NULL"},
      {"status needs_reauth -> active", "status = 'active'", true},
      {"status active -> needs_reauth", "status = 'needs_reauth'"},
      {"refresh_token removed", "refresh_token = NULL"},
      {"row_mac removed", "row_mac = NULL"},
      {"row_mac of another row",
       "row_mac = (SELECT row_mac FROM mail_credentials WHERE email = 'b@x.com')"},
  };
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(full_row("b@x.com")).has_value());
  for (const auto& edit : edits) {
    SCOPED_TRACE(edit.what);
    // A clean account a@x.com each time (removing first: re-adding over a bad row is tested
    // elsewhere).
    store->remove("a@x.com");
    ASSERT_TRUE(store->upsert_account(full_row("a@x.com")).has_value());
    ASSERT_TRUE(store->set_local_password_hash("a@x.com", "$scrypt$owner").has_value());
    if (edit.needs_reauth_first) {
      ASSERT_TRUE(store->mark_needs_reauth("a@x.com", "invalid_grant").has_value());
    }
    ASSERT_TRUE(store->get("a@x.com").has_value());
    ASSERT_TRUE(listed_as_verified(*store, "a@x.com"));

    RawDb(db_path()).exec(std::string("UPDATE mail_credentials SET ") + edit.set +
                          " WHERE email = 'a@x.com'");

    expect_untrusted(store->get("a@x.com"), "a@x.com");
    // A login reads the row without opening its secrets, and is refused all the same.
    expect_untrusted(store->login_record("a@x.com"), "a@x.com");
    auto b = store->get("b@x.com");
    ASSERT_TRUE(b.has_value()) << b.error().message;
    EXPECT_EQ(b->upstream_host, "imap.example.net");
    // Still listed, flagged.
    EXPECT_FALSE(listed_as_verified(*store, "a@x.com"));
    EXPECT_TRUE(listed_as_verified(*store, "b@x.com"));
    EXPECT_EQ(store->list()->size(), 2u);
  }
}

TEST_F(CredentialsStoreTest, RowCopiedFromAnotherAccountIsCorrupt) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  // No secrets, so the AES-GCM associated data cannot catch the move: only the MAC can.
  Credentials bare;
  bare.email = "b@x.com";
  bare.upstream_host = "imap.b.example";
  ASSERT_TRUE(store->upsert_account(bare).has_value());
  ASSERT_TRUE(store->set_local_password_hash("b@x.com", "$scrypt$b").has_value());
  RawDb(db_path()).exec(
      "INSERT INTO mail_credentials SELECT 'a@x.com', use_oauth, access_token, refresh_token, "
      "token_expiry, refreshed_at_ms, password, local_password_hash, upstream_host, "
      "upstream_port, status, status_reason, created_at, updated_at, provider, tenant, "
      "client_id, client_secret, client_certificate, signed_in_as, row_mac "
      "FROM mail_credentials WHERE email = 'b@x.com'");
  expect_untrusted(store->get("a@x.com"), "a@x.com");
  expect_untrusted(store->login_record("a@x.com"), "a@x.com");
  EXPECT_TRUE(store->get("b@x.com").has_value());

  // Renaming the row (email change) fails the same way.
  RawDb(db_path()).exec("UPDATE mail_credentials SET email = 'c@x.com' WHERE email = 'b@x.com'");
  expect_untrusted(store->get("c@x.com"), "c@x.com");
}

TEST_F(CredentialsStoreTest, RowInsertedWithoutTheStoreIsCorrupt) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  RawDb(db_path()).exec(
      "INSERT INTO mail_credentials (email, use_oauth, local_password_hash, upstream_host, "
      "created_at, updated_at) VALUES ('c@x.com', 0, '$scrypt$attacker', 'evil.example', 0, 0)");
  expect_untrusted(store->get("c@x.com"), "c@x.com");
  EXPECT_FALSE(listed_as_verified(*store, "c@x.com"));
  // Reopening does not adopt it: only the v3 -> v4 migration fills in missing MACs.
  store.reset();
  store = open_store();
  ASSERT_NE(store, nullptr);
  expect_untrusted(store->get("c@x.com"), "c@x.com");
}

TEST_F(CredentialsStoreTest, WritesNeverBlessATamperedRow) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(full_row("a@x.com")).has_value());
  ASSERT_TRUE(store->mark_needs_reauth("a@x.com", "invalid_grant").has_value());
  RawDb(db_path()).exec(
      "UPDATE mail_credentials SET upstream_host = 'imap.attacker.example', status = 'active' "
      "WHERE email = 'a@x.com'");

  TokenUpdate update;
  update.access_token = secret_of("access-new");
  update.refresh_token = secret_of("rt-new");
  update.refreshed_at_ms = 9'000;
  auto refreshed = store->update_tokens("a@x.com", update);
  ASSERT_FALSE(refreshed.has_value());
  EXPECT_EQ(refreshed.error().code, Errc::credentials_corrupt);
  EXPECT_EQ(store->mark_needs_reauth("a@x.com", "x").error().code, Errc::credentials_corrupt);
  EXPECT_EQ(store->set_local_password_hash("a@x.com", "$scrypt$h").error().code,
            Errc::credentials_corrupt);
  expect_untrusted(store->get("a@x.com"), "a@x.com");
  RawDb raw(db_path());
  EXPECT_EQ(raw.query("SELECT upstream_host FROM mail_credentials"), "imap.attacker.example");
  EXPECT_EQ(raw.query("SELECT refreshed_at_ms FROM mail_credentials"), "1000");
}

TEST_F(CredentialsStoreTest, AddingAgainOverATamperedRowKeepsNothingOfIt) {
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->upsert_account(full_row("a@x.com")).has_value());
  ASSERT_TRUE(store->set_local_password_hash("a@x.com", "$scrypt$owner").has_value());
  RawDb(db_path()).exec(
      "UPDATE mail_credentials SET local_password_hash = '$scrypt$attacker', created_at = 7");
  expect_untrusted(store->get("a@x.com"), "a@x.com");

  ASSERT_TRUE(store->upsert_account(full_row("a@x.com")).has_value());
  auto got = store->get("a@x.com");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->local_password_hash, "");  // the attacker's hash is gone, not kept
  EXPECT_NE(got->created_at, 7);
  EXPECT_TRUE(listed_as_verified(*store, "a@x.com"));
}

TEST_F(CredentialsStoreTest, EveryStoreWriteKeepsTheRowVerifying) {
  auto first = open_store();
  auto second = open_store();  // another process's connection
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  auto expect_ok = [&](const char* step) {
    SCOPED_TRACE(step);
    for (auto* store : {first.get(), second.get()}) {
      for (const char* email : {"a@x.com", "b@x.com"}) {
        auto got = store->get(email);
        EXPECT_TRUE(got.has_value()) << email << ": " << got.error().message;
        EXPECT_TRUE(listed_as_verified(*store, email)) << email;
      }
    }
  };
  ASSERT_TRUE(first->upsert_account(full_row("a@x.com")).has_value());
  Credentials b;
  b.email = "b@x.com";
  b.use_oauth = false;
  b.password = secret_of("upstream-password");
  ASSERT_TRUE(first->upsert_account(b).has_value());
  expect_ok("upsert");
  ASSERT_TRUE(second->set_local_password_hash("a@x.com", "$scrypt$a").has_value());
  expect_ok("set_local_password_hash");
  ASSERT_TRUE(first->mark_needs_reauth("a@x.com", "invalid_grant").has_value());
  expect_ok("mark_needs_reauth");
  TokenUpdate update;
  update.access_token = secret_of("access-2");
  update.refreshed_at_ms = 2'000;
  ASSERT_EQ(second->update_tokens("a@x.com", update), true);
  expect_ok("update_tokens");
  update.refresh_token = secret_of("rt-3");
  update.refreshed_at_ms = 3'000;
  ASSERT_EQ(first->update_tokens("a@x.com", update), true);
  expect_ok("update_tokens with rotation");
  update.refreshed_at_ms = 2'500;
  ASSERT_EQ(second->update_tokens("a@x.com", update), false);
  expect_ok("stale update_tokens");
  ASSERT_TRUE(first->set_local_password_hash("a@x.com", "").has_value());
  expect_ok("local password cleared");
  Credentials again = full_row("a@x.com");
  again.upstream_host = "imap2.example.net";
  ASSERT_TRUE(second->upsert_account(again).has_value());
  expect_ok("upsert over an existing account");
  // Columns that decide nothing about where a secret goes are not covered: editing them by hand
  // (as tests and operators do) keeps the row usable.
  RawDb(db_path()).exec(
      "UPDATE mail_credentials SET status_reason = 'edited', token_expiry = 1, "
      "refreshed_at_ms = 1, created_at = 1, updated_at = 1");
  expect_ok("bookkeeping columns edited");
  first.reset();
  second.reset();
  first = open_store();
  second = open_store();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  expect_ok("reopened");
  auto got = first->get("a@x.com");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->upstream_host, "imap2.example.net");
  EXPECT_EQ(got->status, AccountStatus::active);
}

// Makes the file look as schema v3 left it: no row_mac column, user_version 3, and the v1 key
// check that v3 code wrote.
void downgrade_to_v3(const fs::path& path, const MasterKey& key) {
  RawDb raw(path);
  raw.exec(
      "ALTER TABLE mail_credentials DROP COLUMN row_mac; "
      "ALTER TABLE connection_log DROP COLUMN messages; DROP INDEX connection_log_by_event; "
      "ALTER TABLE connection_log DROP COLUMN event; PRAGMA user_version = 3;");
  raw.exec_with_blobs(
      "UPDATE meta SET value = ?1 WHERE key = 'key_check'",
      {seal(key, secret_of("imap-oauth2-proxy master key check v1"), "meta:key_check")});
}

std::string key_check_plaintext(RawDb& raw, const MasterKey& key) {
  auto plain = open_sealed(key, raw.query_blob("SELECT value FROM meta WHERE key = 'key_check'"),
                           "meta:key_check");
  return plain ? plain->reveal() : std::string("(does not open)");
}

TEST_F(CredentialsStoreTest, VersionThreeDatabaseGetsItsMacsWithNoUserAction) {
  {
    auto store = open_store();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->upsert_account(full_row("a@x.com")).has_value());
    ASSERT_TRUE(store->set_local_password_hash("a@x.com", "$scrypt$a").has_value());
    Credentials b;
    b.email = "b@x.com";
    b.use_oauth = false;
    b.password = secret_of("upstream-password");
    ASSERT_TRUE(store->upsert_account(b).has_value());
    ASSERT_TRUE(store->mark_needs_reauth("b@x.com", "reason").has_value());
  }
  downgrade_to_v3(db_path(), key_of('k'));
  {
    RawDb raw(db_path());
    ASSERT_EQ(raw.query("PRAGMA user_version"), "3");
    ASSERT_EQ(key_check_plaintext(raw, key_of('k')), "imap-oauth2-proxy master key check v1");
  }

  auto store = open_store();
  ASSERT_NE(store, nullptr);
  {
    RawDb raw(db_path());
    EXPECT_EQ(raw.query("PRAGMA user_version"), std::to_string(current_schema_version()));
    EXPECT_EQ(raw.query("SELECT count(*) FROM mail_credentials WHERE row_mac IS NULL"), "0");
    EXPECT_EQ(key_check_plaintext(raw, key_of('k')), "imap-oauth2-proxy master key check v2");
  }
  auto a = store->get("a@x.com");
  ASSERT_TRUE(a.has_value()) << a.error().message;
  EXPECT_EQ(a->upstream_host, "imap.example.net");
  EXPECT_EQ(a->local_password_hash, "$scrypt$a");
  EXPECT_EQ(a->refresh_token.reveal(), "rt-a@x.com");
  auto b = store->get("b@x.com");
  ASSERT_TRUE(b.has_value()) << b.error().message;
  EXPECT_EQ(b->status, AccountStatus::needs_reauth);
  EXPECT_TRUE(listed_as_verified(*store, "a@x.com"));
  EXPECT_TRUE(listed_as_verified(*store, "b@x.com"));

  // Filled once: a MAC removed afterwards is not filled in again on the next open.
  store.reset();
  RawDb(db_path()).exec("UPDATE mail_credentials SET row_mac = NULL WHERE email = 'a@x.com'");
  store = open_store();
  ASSERT_NE(store, nullptr);
  expect_untrusted(store->get("a@x.com"), "a@x.com");
  EXPECT_TRUE(store->get("b@x.com").has_value());
}

TEST_F(CredentialsStoreTest, FakingAVersionThreeDatabaseDoesNotBlessAnEdit) {
  {
    auto store = open_store();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->upsert_account(full_row("a@x.com")).has_value());
  }
  // Without the key the sealed key check stays v2, whatever else is rolled back.
  RawDb(db_path()).exec(
      "ALTER TABLE mail_credentials DROP COLUMN row_mac; "
      "ALTER TABLE connection_log DROP COLUMN messages; DROP INDEX connection_log_by_event; "
      "ALTER TABLE connection_log DROP COLUMN event; PRAGMA user_version = 3; "
      "UPDATE mail_credentials SET upstream_host = 'imap.attacker.example'");
  auto store = open_store();
  ASSERT_NE(store, nullptr);
  expect_untrusted(store->get("a@x.com"), "a@x.com");
}

TEST(AccountStatusTest, ToString) {
  EXPECT_EQ(to_string(AccountStatus::active), "active");
  EXPECT_EQ(to_string(AccountStatus::needs_reauth), "needs_reauth");
}

}  // namespace
}  // namespace iop::storage
