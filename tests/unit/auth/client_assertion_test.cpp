#include "auth/client_assertion.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "auth/base64.hpp"

namespace iop::auth {
namespace {

using json = nlohmann::json;

struct Free {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(X509* x) const { X509_free(x); }
  void operator()(BIO* b) const { BIO_free(b); }
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Key = std::unique_ptr<EVP_PKEY, Free>;
using Cert = std::unique_ptr<X509, Free>;

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

// A self-signed certificate for `key`, valid for a day.
Cert self_signed(EVP_PKEY* key) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("imap-oauth2-proxy test"), -1,
                             -1, 0);
  X509_set_issuer_name(cert.get(), name);
  EXPECT_GT(X509_sign(cert.get(), key, EVP_sha256()), 0);
  return cert;
}

std::string cert_pem(X509* cert) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  return bio_text(bio.get());
}

std::string pkcs8_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return bio_text(bio.get());
}

std::string traditional_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey_traditional(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return bio_text(bio.get());
}

std::string encrypted_pem(EVP_PKEY* key) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  char pass[] = "passphrase";
  PEM_write_bio_PKCS8PrivateKey(bio.get(), key, EVP_aes_256_cbc(), pass, sizeof pass - 1, nullptr,
                                nullptr);
  return bio_text(bio.get());
}

// Key generation is the slow part: one 2048-bit key for the whole suite.
class ClientAssertion : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    key_ = EVP_RSA_gen(2048);
    other_key_ = EVP_RSA_gen(2048);
    cert_ = self_signed(key_).release();
  }
  static void TearDownTestSuite() {
    X509_free(cert_);
    EVP_PKEY_free(key_);
    EVP_PKEY_free(other_key_);
  }
  static EVP_PKEY* key_;
  static EVP_PKEY* other_key_;
  static X509* cert_;
};
EVP_PKEY* ClientAssertion::key_ = nullptr;
EVP_PKEY* ClientAssertion::other_key_ = nullptr;
X509* ClientAssertion::cert_ = nullptr;

json decode_part(std::string_view part) {
  const auto text = base64url_decode(part);
  EXPECT_TRUE(text.has_value());
  return json::parse(text.value_or("null"));
}

TEST_F(ClientAssertion, SignsAVerifiableRs256Jwt) {
  const auto loaded = load_client_certificate(Secret(cert_pem(cert_) + pkcs8_pem(key_)));
  ASSERT_TRUE(loaded) << loaded.error().message;

  // x5t#S256 = base64url(SHA-256(DER)).
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ASSERT_EQ(X509_digest(cert_, EVP_sha256(), digest, &len), 1);
  const auto expected_x5t =
      base64url_encode(std::string_view(reinterpret_cast<char*>(digest), len));
  EXPECT_EQ(x5t_s256(*loaded), expected_x5t);
  EXPECT_EQ(expected_x5t.size(), 43u);

  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
  const std::string endpoint = "https://login.microsoftonline.com/tid/oauth2/v2.0/token";
  const auto assertion = make_client_assertion(*loaded, "client-1", endpoint, now);
  ASSERT_TRUE(assertion) << assertion.error().message;
  const std::string jwt = assertion->reveal();
  const auto dot1 = jwt.find('.');
  const auto dot2 = jwt.find('.', dot1 + 1);
  ASSERT_NE(dot2, std::string::npos);
  ASSERT_EQ(jwt.find('.', dot2 + 1), std::string::npos);

  const auto header = decode_part(std::string_view(jwt).substr(0, dot1));
  EXPECT_EQ(header, (json{{"alg", "RS256"}, {"typ", "JWT"}, {"x5t#S256", expected_x5t}}));
  const auto claims = decode_part(std::string_view(jwt).substr(dot1 + 1, dot2 - dot1 - 1));
  EXPECT_EQ(claims["aud"], endpoint);
  EXPECT_EQ(claims["iss"], "client-1");
  EXPECT_EQ(claims["sub"], "client-1");
  EXPECT_EQ(claims["nbf"], 1'700'000'000);
  EXPECT_EQ(claims["iat"], 1'700'000'000);
  EXPECT_EQ(claims["exp"], 1'700'000'600);
  ASSERT_TRUE(claims["jti"].is_string());
  EXPECT_EQ(claims["jti"].get<std::string>().size(), 36u);

  // The signature verifies with the certificate's public key, over header.payload, as RS256.
  const auto signature = base64url_decode(std::string_view(jwt).substr(dot2 + 1));
  ASSERT_TRUE(signature);
  EXPECT_EQ(signature->size(), 256u);
  std::unique_ptr<EVP_MD_CTX, Free> ctx(EVP_MD_CTX_new());
  EVP_PKEY* pub = X509_get0_pubkey(cert_);
  EVP_PKEY_CTX* pctx = nullptr;
  ASSERT_EQ(EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, pub), 1);
  // Explicitly PKCS#1 v1.5: a PSS signature (PS256) would not verify.
  ASSERT_GT(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING), 0);
  EXPECT_EQ(
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature->data()),
                       signature->size(), reinterpret_cast<const unsigned char*>(jwt.data()), dot2),
      1);

  // A second assertion has its own jti.
  const auto again = make_client_assertion(*loaded, "client-1", endpoint, now);
  ASSERT_TRUE(again);
  const auto claims2 =
      decode_part(std::string_view(again->reveal())
                      .substr(dot1 + 1, again->reveal().find('.', dot1 + 1) - dot1 - 1));
  EXPECT_NE(claims2["jti"], claims["jti"]);
}

TEST_F(ClientAssertion, LoadsKeyFirstTraditionalAndWithAChain) {
  const auto a = load_client_certificate(Secret(traditional_pem(key_) + cert_pem(cert_)));
  ASSERT_TRUE(a) << a.error().message;
  const auto b = load_client_certificate(
      Secret("junk before\n" + pkcs8_pem(key_) + cert_pem(cert_) + cert_pem(cert_)));
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(a->x5t_s256(), b->x5t_s256());
  const auto left = a->not_after() - std::chrono::system_clock::now();
  EXPECT_GT(left, std::chrono::hours(23));
  EXPECT_LE(left, std::chrono::hours(25));
}

struct BadPem {
  const char* name;
  std::string pem;
  std::string message;
};

TEST_F(ClientAssertion, ErrorsNameWhatIsWrong) {
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  Cert ec_cert = self_signed(ec);
  EVP_PKEY* small = EVP_RSA_gen(1024);
  Cert small_cert = self_signed(small);
  const BadPem cases[] = {
      {"empty", "", "no certificate in cert.pem (expected a '-----BEGIN CERTIFICATE-----' block)"},
      {"key_only", pkcs8_pem(key_), "no certificate in cert.pem"},
      {"cert_only", cert_pem(cert_), "no RSA private key in cert.pem"},
      {"encrypted", cert_pem(cert_) + encrypted_pem(key_), "is encrypted"},
      {"mismatch", cert_pem(cert_) + pkcs8_pem(other_key_),
       "the private key does not match the certificate in cert.pem"},
      {"ec_key", cert_pem(ec_cert.get()) + pkcs8_pem(ec), "not an RSA key"},
      {"ec_traditional", cert_pem(ec_cert.get()) + traditional_pem(ec),
       "the key there is not an RSA key"},
      {"small_key", cert_pem(small_cert.get()) + pkcs8_pem(small), "has 1024 bits"},
      {"damaged_cert", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
       "a block there is damaged"},
  };
  for (const auto& c : cases) {
    const auto got = load_client_certificate(Secret(c.pem), "cert.pem");
    ASSERT_FALSE(got) << c.name;
    EXPECT_EQ(got.error().code, Errc::invalid_argument) << c.name;
    EXPECT_NE(got.error().message.find(c.message), std::string::npos)
        << c.name << ": " << got.error().message;
    EXPECT_EQ(got.error().message.find("BEGIN PRIVATE KEY-----\nMII"), std::string::npos);
  }
  EVP_PKEY_free(ec);
  EVP_PKEY_free(small);
}

}  // namespace
}  // namespace iop::auth
