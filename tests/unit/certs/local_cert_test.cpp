// The local CA and server certificate: names, key type, file modes, idempotence, renewal,
// and every broken file combination. Checks use OpenSSL directly where they can, so they do
// not trust the code under test to describe its own output.

#include "certs/local_cert.hpp"

#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "tests/support/process.hpp"

namespace iop::certs {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spew(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

X509Ptr read_cert(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "r");
  if (f == nullptr) {
    return nullptr;
  }
  X509Ptr cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return cert;
}

PkeyPtr read_key(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "r");
  if (f == nullptr) {
    return nullptr;
  }
  PkeyPtr key(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  return key;
}

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 0777;
}

// Verifies `leaf` against the single trust anchor `ca`, requiring `host` (DNS name or IP)
// unless empty. Returns the X509_V_* result.
int verify(X509* leaf, X509* ca, const std::string& host = {}) {
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca);
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf, nullptr);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  if (!host.empty()) {
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) != 1) {
      X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
    }
  }
  X509_verify_cert(ctx.get());
  return X509_STORE_CTX_get_error(ctx.get());
}

class LocalCertTest : public ::testing::Test {
 protected:
  fs::path cert() const { return dir_.path() / "certs" / "server.crt"; }
  fs::path key() const { return dir_.path() / "certs" / "server.key"; }
  fs::path ca() const { return dir_.path() / "certs" / "ca.crt"; }
  fs::path ca_key() const { return dir_.path() / "certs" / "ca.key"; }

  void create(const CertificateOptions& options = {}) {
    const auto created = ensure_server_certificate(cert(), key(), options);
    ASSERT_TRUE(created.has_value()) << created.error().message;
    ASSERT_TRUE(*created);
  }

  test::TempDir dir_;
};

TEST_F(LocalCertTest, CreatesCaAndServerCertificateWithModes) {
  create();
  EXPECT_EQ(mode_of(key()), 0600u);
  EXPECT_EQ(mode_of(cert()), 0644u);
  EXPECT_EQ(mode_of(ca_key()), 0600u);
  EXPECT_EQ(mode_of(ca()), 0644u);
  EXPECT_EQ(ca_certificate_path(cert()), ca());
  EXPECT_EQ(ca_key_path(cert()), ca_key());
  // Nothing but the four files: no temporary file left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(cert().parent_path())) {
    ++files;
  }
  EXPECT_EQ(files, 4);
}

TEST_F(LocalCertTest, ServerCertificateHasLoopbackNamesAndP256Key) {
  create();
  const X509Ptr leaf = read_cert(cert());
  ASSERT_TRUE(leaf);
  EXPECT_EQ(X509_check_host(leaf.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "::1", 0), 1);
  EXPECT_NE(X509_check_host(leaf.get(), "example.com", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_ip_asc(leaf.get(), "10.0.0.1", 0), 1);

  EVP_PKEY* pub = X509_get0_pubkey(leaf.get());
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
  char group[64] = {};
  std::size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(pub, group, sizeof group, &len), 1);
  EXPECT_EQ(OBJ_txt2nid(group), NID_X9_62_prime256v1);

  // An end-entity TLS server certificate, not a CA.
  EXPECT_EQ(X509_check_ca(leaf.get()), 0);
  EXPECT_NE(X509_get_extended_key_usage(leaf.get()) & XKU_SSL_SERVER, 0u);

  // About two years of validity.
  ASN1_TIME* now = X509_gmtime_adj(nullptr, 0);
  int days = 0;
  int secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, now, X509_get0_notAfter(leaf.get())), 1);
  ASN1_TIME_free(now);
  EXPECT_GE(days, 729);
  EXPECT_LE(days, 731);

  // The key file holds the matching P-256 private key.
  const PkeyPtr priv = read_key(key());
  ASSERT_TRUE(priv);
  EXPECT_EQ(X509_check_private_key(leaf.get(), priv.get()), 1);
}

TEST_F(LocalCertTest, ChainVerifiesAgainstTheCaForEachLoopbackName) {
  create();
  const X509Ptr leaf = read_cert(cert());
  const X509Ptr anchor = read_cert(ca());
  ASSERT_TRUE(leaf && anchor);
  EXPECT_EQ(X509_check_ca(anchor.get()), 1);
  for (const char* host : {"localhost", "127.0.0.1", "::1"}) {
    EXPECT_EQ(verify(leaf.get(), anchor.get(), host), X509_V_OK) << host;
  }
  EXPECT_EQ(verify(leaf.get(), anchor.get(), "example.com"), X509_V_ERR_HOSTNAME_MISMATCH);
  // The chain file carries the CA after the server certificate.
  const std::string chain = slurp(cert());
  EXPECT_NE(chain.find(slurp(ca())), std::string::npos);
  EXPECT_LT(chain.find("BEGIN CERTIFICATE"), chain.rfind("BEGIN CERTIFICATE"));
}

TEST_F(LocalCertTest, CaNameConstraintsRejectOtherNames) {
  create();
  const X509Ptr anchor = read_cert(ca());
  const PkeyPtr anchor_key = read_key(ca_key());
  ASSERT_TRUE(anchor && anchor_key);
  // What a thief of ca.key could mint: a certificate for another host, signed by the CA.
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  X509Ptr forged(X509_new());
  X509_set_version(forged.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(forged.get()), 7);
  X509_gmtime_adj(X509_getm_notBefore(forged.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(forged.get()), 3600);
  X509_set_pubkey(forged.get(), key.get());
  X509_NAME_add_entry_by_txt(X509_get_subject_name(forged.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("mail.example.com"), -1, -1, 0);
  X509_set_issuer_name(forged.get(), X509_get_subject_name(anchor.get()));
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, anchor.get(), forged.get(), nullptr, nullptr, 0);
  X509_EXTENSION* san =
      X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, "DNS:mail.example.com,IP:192.0.2.1");
  ASSERT_NE(san, nullptr);
  X509_add_ext(forged.get(), san, -1);
  X509_EXTENSION_free(san);
  ASSERT_GT(X509_sign(forged.get(), anchor_key.get(), EVP_sha256()), 0);

  EXPECT_EQ(verify(forged.get(), anchor.get()), X509_V_ERR_PERMITTED_VIOLATION);
}

TEST_F(LocalCertTest, SecondCallChangesNothing) {
  create();
  const std::string cert_before = slurp(cert());
  const std::string key_before = slurp(key());
  const std::string ca_before = slurp(ca());
  const auto again = ensure_server_certificate(cert(), key());
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_FALSE(*again);
  EXPECT_EQ(slurp(cert()), cert_before);
  EXPECT_EQ(slurp(key()), key_before);
  EXPECT_EQ(slurp(ca()), ca_before);
}

TEST_F(LocalCertTest, OnlyOneOfThePairIsAnError) {
  create();
  fs::remove(key());
  auto r = ensure_server_certificate(cert(), key());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::config_error);
  EXPECT_NE(r.error().message.find(cert().string()), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(key().string()), std::string::npos) << r.error().message;
  EXPECT_TRUE(fs::exists(cert()));  // nothing was overwritten
  EXPECT_FALSE(fs::exists(key()));

  fs::remove(cert());
  spew(key(), "whatever");
  r = ensure_server_certificate(cert(), key());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::config_error);
  EXPECT_EQ(slurp(key()), "whatever");
}

TEST_F(LocalCertTest, KeyOfAnotherCertificateIsDetected) {
  create();
  test::TempDir other;
  const auto made = ensure_server_certificate(other.path() / "s.crt", other.path() / "s.key");
  ASSERT_TRUE(made.has_value()) << made.error().message;
  fs::copy_file(other.path() / "s.key", key(), fs::copy_options::overwrite_existing);
  const auto r = ensure_server_certificate(cert(), key());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::config_error);
  EXPECT_NE(r.error().message.find("does not belong"), std::string::npos) << r.error().message;
}

TEST_F(LocalCertTest, UnreadableFilesAreErrors) {
  create();
  spew(cert(), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
  auto r = ensure_server_certificate(cert(), key());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::config_error);

  fs::remove(cert());
  fs::remove(key());
  spew(ca_key(), "garbage");
  r = ensure_server_certificate(cert(), key());
  ASSERT_FALSE(r.has_value()) << "a damaged CA must not be replaced silently";
  EXPECT_EQ(r.error().code, Errc::config_error);
  EXPECT_FALSE(fs::exists(cert()));
}

TEST_F(LocalCertTest, MissingServerCertificateIsReissuedByTheExistingCa) {
  create();
  const std::string ca_before = slurp(ca());
  fs::remove(cert());
  fs::remove(key());
  create();
  EXPECT_EQ(slurp(ca()), ca_before);
  const X509Ptr leaf = read_cert(cert());
  const X509Ptr anchor = read_cert(ca());
  EXPECT_EQ(verify(leaf.get(), anchor.get(), "localhost"), X509_V_OK);
}

TEST_F(LocalCertTest, OnlyHalfACaIsAnError) {
  create();
  fs::remove(cert());
  fs::remove(key());
  fs::remove(ca_key());
  const auto r = ensure_server_certificate(cert(), key());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::config_error);
  EXPECT_NE(r.error().message.find("ca.key"), std::string::npos) << r.error().message;
}

TEST_F(LocalCertTest, ExpiringCertificateOfTheLocalCaIsRenewed) {
  CertificateOptions past;
  past.now = Clock::now() - std::chrono::days(720);  // expires in about 10 days
  create(past);
  const std::string ca_before = slurp(ca());
  const std::string cert_before = slurp(cert());

  const auto renewed = ensure_server_certificate(cert(), key());
  ASSERT_TRUE(renewed.has_value()) << renewed.error().message;
  EXPECT_TRUE(*renewed);
  EXPECT_NE(slurp(cert()), cert_before);
  EXPECT_EQ(slurp(ca()), ca_before) << "renewal must keep the CA users already trust";
  const auto info = inspect_certificate(cert());
  ASSERT_TRUE(info.has_value());
  EXPECT_GT(info->not_after, Clock::now() + std::chrono::days(700));
  const X509Ptr leaf = read_cert(cert());
  const X509Ptr anchor = read_cert(ca());
  EXPECT_EQ(verify(leaf.get(), anchor.get(), "127.0.0.1"), X509_V_OK);
}

TEST_F(LocalCertTest, ExpiredForeignCertificateIsAnError) {
  CertificateOptions past;
  past.now = Clock::now() - std::chrono::days(800);
  create(past);
  // Without the CA beside it, the certificate is someone else's to renew.
  fs::remove(ca());
  fs::remove(ca_key());
  const auto r = ensure_server_certificate(cert(), key());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::config_error);
  EXPECT_NE(r.error().message.find("expired"), std::string::npos) << r.error().message;
}

TEST_F(LocalCertTest, InspectDescribesBothCertificates) {
  create();
  const auto leaf = inspect_certificate(cert());
  ASSERT_TRUE(leaf.has_value()) << leaf.error().message;
  EXPECT_EQ(leaf->dns_names, std::vector<std::string>{"localhost"});
  EXPECT_EQ(leaf->ip_addresses, (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(leaf->key_type, "EC P-256");
  EXPECT_FALSE(leaf->is_ca);
  EXPECT_NE(leaf->subject.find("CN=localhost"), std::string::npos) << leaf->subject;
  EXPECT_EQ(leaf->sha256_fingerprint.size(), 32u * 3 - 1);

  const auto anchor = inspect_certificate(ca());
  ASSERT_TRUE(anchor.has_value());
  EXPECT_TRUE(anchor->is_ca);
  EXPECT_EQ(anchor->subject, leaf->issuer);

  const auto missing = inspect_certificate(dir_.path() / "nope.crt");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::config_error);
}

}  // namespace
}  // namespace iop::certs
