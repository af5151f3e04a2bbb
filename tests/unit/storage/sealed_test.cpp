#include "storage/sealed.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/process.hpp"

namespace iop::storage {
namespace {

namespace fs = std::filesystem;

// Secret has constructors from std::string and std::string_view, so a literal is ambiguous.
Secret secret_of(std::string_view value) { return Secret(value); }

MasterKey key_of(char fill) {
  auto key = MasterKey::from_bytes(Secret(std::string(MasterKey::size, fill)));
  EXPECT_TRUE(key.has_value());
  return std::move(*key);
}

void write_file(const fs::path& path, const std::string& bytes, fs::perms perms) {
  std::ofstream(path, std::ios::binary) << bytes;
  fs::permissions(path, perms);
}

mode_t mode_of(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return st.st_mode & 07777;
}

TEST(Sealed, RoundTrip) {
  const MasterKey key = key_of('k');
  const Secret plain = secret_of("1//0refresh-token-value");
  const std::string blob = seal(key, plain, "alice@example.com");
  ASSERT_EQ(blob.size(), 1 + 12 + plain.size() + 16);
  EXPECT_EQ(static_cast<unsigned char>(blob[0]), 0x01);
  EXPECT_EQ(blob.find(plain.reveal()), std::string::npos);

  auto opened = open_sealed(key, blob, "alice@example.com");
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(opened->reveal(), plain.reveal());
}

TEST(Sealed, RoundTripEmptyPlaintextAndAad) {
  const MasterKey key = key_of('k');
  const std::string blob = seal(key, Secret(), "");
  auto opened = open_sealed(key, blob, "");
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_TRUE(opened->empty());
}

TEST(Sealed, FreshNonceEachTime) {
  const MasterKey key = key_of('k');
  const Secret plain = secret_of("same");
  EXPECT_NE(seal(key, plain, "a"), seal(key, plain, "a"));
}

void expect_corrupt(const MasterKey& key, const std::string& blob, std::string_view aad) {
  auto opened = open_sealed(key, blob, aad);
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().code, Errc::credentials_corrupt);
}

TEST(Sealed, AnyFlippedByteIsDetected) {
  const MasterKey key = key_of('k');
  const std::string blob = seal(key, secret_of("token"), "aad");
  // Every byte: version, nonce, ciphertext and tag.
  for (std::size_t i = 0; i < blob.size(); ++i) {
    std::string bad = blob;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    SCOPED_TRACE("byte " + std::to_string(i));
    expect_corrupt(key, bad, "aad");
  }
}

TEST(Sealed, TruncationIsDetected) {
  const MasterKey key = key_of('k');
  const std::string blob = seal(key, secret_of("token"), "aad");
  for (std::size_t n = 0; n < blob.size(); ++n) {
    SCOPED_TRACE("length " + std::to_string(n));
    expect_corrupt(key, blob.substr(0, n), "aad");
  }
  expect_corrupt(key, blob + "x", "aad");
}

TEST(Sealed, WrongVersionIsRejected) {
  const MasterKey key = key_of('k');
  std::string blob = seal(key, secret_of("token"), "aad");
  blob[0] = 0x02;
  expect_corrupt(key, blob, "aad");
}

TEST(Sealed, WrongAadIsRejected) {
  const MasterKey key = key_of('k');
  const std::string blob = seal(key, secret_of("token"), std::string("a@x\0refresh_token", 17));
  expect_corrupt(key, blob, std::string("b@x\0refresh_token", 17));
  expect_corrupt(key, blob, std::string("a@x\0access_token", 16));
  expect_corrupt(key, blob, "");
}

TEST(Sealed, WrongKeyIsRejected) {
  const std::string blob = seal(key_of('k'), secret_of("token"), "aad");
  expect_corrupt(key_of('j'), blob, "aad");
}

TEST(Sealed, ErrorMessageHoldsNoPlaintext) {
  const MasterKey key = key_of('k');
  std::string blob = seal(key, secret_of("very-secret-token"), "aad");
  blob.back() = static_cast<char>(blob.back() ^ 0x01);
  auto opened = open_sealed(key, blob, "aad");
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().message.find("very-secret-token"), std::string::npos);
}

TEST(MasterKey, FromBytesChecksSize) {
  EXPECT_TRUE(MasterKey::from_bytes(Secret(std::string(32, 'x'))).has_value());
  auto short_key = MasterKey::from_bytes(Secret(std::string(31, 'x')));
  ASSERT_FALSE(short_key.has_value());
  EXPECT_EQ(short_key.error().code, Errc::key_error);
}

TEST(MasterKey, CreateWritesPrivateFileAndLoadReadsItBack) {
  test::TempDir dir;
  const fs::path folder = dir.path() / "new" / "sub";
  const fs::path path = folder / "master.key";

  auto created = MasterKey::create(path);
  ASSERT_TRUE(created.has_value()) << created.error().message;
  EXPECT_EQ(created->bytes().size(), MasterKey::size);
  EXPECT_EQ(fs::file_size(path), MasterKey::size);
  EXPECT_EQ(mode_of(path), 0600u);
  EXPECT_EQ(mode_of(folder), 0700u);
  EXPECT_EQ(mode_of(dir.path() / "new"), 0700u);

  auto loaded = MasterKey::load(path);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_TRUE(loaded->bytes() == created->bytes());

  // Two keys made independently differ (the bytes are random).
  auto other = MasterKey::create(dir.path() / "other.key");
  ASSERT_TRUE(other.has_value());
  EXPECT_FALSE(other->bytes() == created->bytes());
}

TEST(MasterKey, CreateRefusesToOverwrite) {
  test::TempDir dir;
  const fs::path path = dir.path() / "master.key";
  ASSERT_TRUE(MasterKey::create(path).has_value());
  auto before = MasterKey::load(path);
  ASSERT_TRUE(before.has_value());

  auto again = MasterKey::create(path);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::key_error);
  EXPECT_NE(again.error().message.find(path.string()), std::string::npos);
  auto after = MasterKey::load(path);
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->bytes() == before->bytes());
}

TEST(MasterKey, LoadOrCreateCreatesOnceThenLoads) {
  test::TempDir dir;
  const fs::path path = dir.path() / "master.key";
  auto first = MasterKey::load_or_create(path);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  auto second = MasterKey::load_or_create(path);
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_TRUE(first->bytes() == second->bytes());
}

TEST(MasterKey, MissingFileNamesPathAndInit) {
  test::TempDir dir;
  const fs::path path = dir.path() / "absent.key";
  auto loaded = MasterKey::load(path);
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().code, Errc::key_error);
  EXPECT_NE(loaded.error().message.find(path.string()), std::string::npos);
  EXPECT_NE(loaded.error().message.find("does not exist"), std::string::npos);
  EXPECT_NE(loaded.error().message.find("imap-oauth2-proxy init"), std::string::npos);
}

TEST(MasterKey, WrongSizeIsRejected) {
  test::TempDir dir;
  for (std::size_t n : {0u, 31u, 33u, 64u}) {
    SCOPED_TRACE("size " + std::to_string(n));
    const fs::path path = dir.path() / ("key" + std::to_string(n));
    write_file(path, std::string(n, 'x'), fs::perms::owner_read | fs::perms::owner_write);
    auto loaded = MasterKey::load(path);
    ASSERT_FALSE(loaded.has_value());
    EXPECT_EQ(loaded.error().code, Errc::key_error);
    EXPECT_NE(loaded.error().message.find(path.string()), std::string::npos);
    EXPECT_NE(loaded.error().message.find("32"), std::string::npos);
  }
}

TEST(MasterKey, GroupOrOtherAccessIsRefused) {
  test::TempDir dir;
  const fs::path path = dir.path() / "master.key";
  ASSERT_TRUE(MasterKey::create(path).has_value());
  for (fs::perms extra : {fs::perms::group_read, fs::perms::others_read, fs::perms::group_write}) {
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | extra);
    auto loaded = MasterKey::load(path);
    ASSERT_FALSE(loaded.has_value());
    EXPECT_EQ(loaded.error().code, Errc::key_error);
    EXPECT_NE(loaded.error().message.find(path.string()), std::string::npos);
    EXPECT_NE(loaded.error().message.find("chmod 600"), std::string::npos);
  }
  fs::permissions(path, fs::perms::owner_read);
  EXPECT_TRUE(MasterKey::load(path).has_value());
}

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0x0f]);
  }
  return out;
}

// The expected value was computed with an independent HKDF (RFC 5869 section 2, written with
// Python's hmac module): PRK = HMAC-SHA256(32 zero bytes, IKM), OKM = HMAC-SHA256(PRK, info | 1).
TEST(DeriveKey, IsHkdfSha256WithNoSaltAndTheLabelAsInfo) {
  const Secret derived = derive_key(key_of('k'), "imap-oauth2-proxy mail_credentials row mac v1");
  EXPECT_EQ(hex(derived.reveal()),
            "7e3f089863d93cee235235779368c193b054bb7b452c365d0330d72e8490fb03");
}

TEST(DeriveKey, DistinctLabelsAndKeysGiveDistinctKeys) {
  const MasterKey key = key_of('k');
  const Secret a = derive_key(key, "label a");
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.reveal(), derive_key(key, "label a").reveal());  // deterministic
  EXPECT_NE(a.reveal(), derive_key(key, "label b").reveal());
  EXPECT_NE(a.reveal(), derive_key(key_of('j'), "label a").reveal());
  // Never the master key itself.
  EXPECT_NE(a.reveal(), key.bytes().reveal());
}

// RFC 4231 section 4.3, test case 2.
TEST(HmacSha256, Rfc4231TestCase2) {
  EXPECT_EQ(hex(hmac_sha256(secret_of("Jefe"), "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(MacEqual, ComparesContentAndLength) {
  EXPECT_TRUE(mac_equal("abc", "abc"));
  EXPECT_TRUE(mac_equal("", ""));
  EXPECT_FALSE(mac_equal("abc", "abd"));
  EXPECT_FALSE(mac_equal("abc", "ab"));
  EXPECT_FALSE(mac_equal("", "a"));
}

}  // namespace
}  // namespace iop::storage
