#include "auth/client_assertion.hpp"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <array>
#include <ctime>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "auth/base64.hpp"
#include "common/wipe.hpp"

namespace iop::auth {

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct Pkcs8Free {
  void operator()(PKCS8_PRIV_KEY_INFO* p) const { PKCS8_PRIV_KEY_INFO_free(p); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using Pkcs8Ptr = std::unique_ptr<PKCS8_PRIV_KEY_INFO, Pkcs8Free>;

// One PEM block as PEM_read_bio hands it out; the DER (key material) is wiped before release.
struct PemBlock {
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  PemBlock() = default;
  PemBlock(const PemBlock&) = delete;
  PemBlock& operator=(const PemBlock&) = delete;
  ~PemBlock() {
    if (data != nullptr) {
      secure_wipe(std::span(data, static_cast<std::size_t>(len)));
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
  }
};

// Microsoft requires RSA keys of at least 2048 bits for certificate credentials.
constexpr int min_rsa_bits = 2048;
constexpr std::chrono::minutes assertion_lifetime{10};

std::chrono::system_clock::time_point not_after_of(const X509* cert) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) {
    return {};
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string random_uuid() {
  std::array<unsigned char, 16> b{};
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) {
    throw std::runtime_error("the random generator failed");
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // RFC 9562 version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // variant 10
  std::string out;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) {
      out += '-';
    }
    out += fmt::format("{:02x}", b[i]);
  }
  return out;
}

std::int64_t numeric_date(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace

struct ClientCertificate::Impl {
  X509Ptr cert;
  PkeyPtr key;
  std::string x5t_s256;
  std::chrono::system_clock::time_point not_after;
};

ClientCertificate::ClientCertificate(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

const std::string& ClientCertificate::x5t_s256() const { return impl_->x5t_s256; }

std::chrono::system_clock::time_point ClientCertificate::not_after() const {
  return impl_->not_after;
}

std::string x5t_s256(const ClientCertificate& certificate) { return certificate.x5t_s256(); }

Result<ClientCertificate> load_client_certificate(const Secret& pem, std::string_view source) {
  const auto& text = pem.reveal();
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) {
    return fail(Errc::internal, "out of memory reading the certificate");
  }
  auto impl = std::make_shared<ClientCertificate::Impl>();
  bool encrypted_key = false;
  bool other_key = false;
  bool bad_block = false;
  for (;;) {
    PemBlock block;
    if (PEM_read_bio(bio.get(), &block.name, &block.header, &block.data, &block.len) != 1) {
      break;  // no more blocks (or trailing junk, which is ignored like openssl(1) does)
    }
    const std::string_view name(block.name);
    const unsigned char* p = block.data;
    if (name == "CERTIFICATE" || name == "X509 CERTIFICATE") {
      if (!impl->cert) {
        impl->cert.reset(d2i_X509(nullptr, &p, block.len));
        bad_block = bad_block || !impl->cert;
      }
    } else if (name == "PRIVATE KEY") {
      if (!impl->key) {
        Pkcs8Ptr info(d2i_PKCS8_PRIV_KEY_INFO(nullptr, &p, block.len));
        if (info) {
          impl->key.reset(EVP_PKCS82PKEY(info.get()));
        }
        bad_block = bad_block || !impl->key;
      }
    } else if (name == "RSA PRIVATE KEY") {
      // RFC 1421 headers ("Proc-Type: 4,ENCRYPTED") mark a passphrase-protected traditional key.
      if (std::string_view(block.header).find("ENCRYPTED") != std::string_view::npos) {
        encrypted_key = true;
      } else if (!impl->key) {
        impl->key.reset(d2i_PrivateKey(EVP_PKEY_RSA, nullptr, &p, block.len));
        bad_block = bad_block || !impl->key;
      }
    } else if (name == "ENCRYPTED PRIVATE KEY") {
      encrypted_key = true;
    } else if (name.ends_with("PRIVATE KEY")) {
      other_key = true;  // EC, DSA, ...
    }
  }
  ERR_clear_error();

  if (!impl->cert) {
    return fail(Errc::invalid_argument,
                fmt::format("no certificate in {} (expected a '-----BEGIN CERTIFICATE-----' "
                            "block){}",
                            source, bad_block ? "; a block there is damaged" : ""));
  }
  if (!impl->key) {
    if (encrypted_key) {
      return fail(Errc::invalid_argument,
                  fmt::format("the private key in {} is encrypted; store it without a "
                              "passphrase ('openssl pkey -in KEY -out PLAIN') and protect the "
                              "file's permissions instead",
                              source));
    }
    return fail(Errc::invalid_argument,
                fmt::format("no RSA private key in {} (expected a '-----BEGIN PRIVATE KEY-----' "
                            "or '-----BEGIN RSA PRIVATE KEY-----' block){}",
                            source,
                            other_key   ? "; the key there is not an RSA key"
                            : bad_block ? "; a block there is damaged"
                                        : ""));
  }
  if (EVP_PKEY_is_a(impl->key.get(), "RSA") != 1) {
    return fail(Errc::invalid_argument,
                fmt::format("the private key in {} is not an RSA key; certificate credentials "
                            "are signed with RS256 and need RSA",
                            source));
  }
  if (const int bits = EVP_PKEY_get_bits(impl->key.get()); bits < min_rsa_bits) {
    return fail(Errc::invalid_argument,
                fmt::format("the RSA key in {} has {} bits; at least {} are needed", source, bits,
                            min_rsa_bits));
  }
  if (X509_check_private_key(impl->cert.get(), impl->key.get()) != 1) {
    ERR_clear_error();
    return fail(Errc::invalid_argument,
                fmt::format("the private key does not match the certificate in {}", source));
  }

  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_len = 0;
  if (X509_digest(impl->cert.get(), EVP_sha256(), digest.data(), &digest_len) != 1) {
    ERR_clear_error();
    return fail(Errc::internal, "cannot compute the certificate's SHA-256 thumbprint");
  }
  impl->x5t_s256 =
      base64url_encode(std::string_view(reinterpret_cast<const char*>(digest.data()), digest_len));
  impl->not_after = not_after_of(impl->cert.get());
  return ClientCertificate(std::move(impl));
}

Result<Secret> make_client_assertion(const ClientCertificate& certificate,
                                     std::string_view client_id, std::string_view token_endpoint,
                                     std::chrono::system_clock::time_point now) {
  using nlohmann::json;
  // RFC 7523 §3: iss and sub are the client id, aud the token endpoint, exp required; jti lets
  // the server refuse a replay. Microsoft's certificate-credentials page asks for the same,
  // plus the x5t#S256 header naming the certificate.
  const json header = {{"alg", "RS256"}, {"typ", "JWT"}, {"x5t#S256", certificate.x5t_s256()}};
  const json claims = {
      {"aud", std::string(token_endpoint)},
      {"iss", std::string(client_id)},
      {"sub", std::string(client_id)},
      {"jti", random_uuid()},
      {"iat", numeric_date(now)},
      {"nbf", numeric_date(now)},
      {"exp", numeric_date(now + assertion_lifetime)},
  };
  const std::string signing_input =
      base64url_encode(header.dump()) + "." + base64url_encode(claims.dump());

  MdCtxPtr ctx(EVP_MD_CTX_new());
  std::size_t sig_len = 0;
  // RSA keys sign with RSASSA-PKCS1-v1_5 by default: RS256 (RFC 7518 §3.3).
  if (!ctx ||
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, certificate.impl().key.get()) !=
          1 ||
      EVP_DigestSign(ctx.get(), nullptr, &sig_len,
                     reinterpret_cast<const unsigned char*>(signing_input.data()),
                     signing_input.size()) != 1) {
    ERR_clear_error();
    return fail(Errc::internal, "OpenSSL could not sign the client assertion");
  }
  std::string signature(sig_len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &sig_len,
                     reinterpret_cast<const unsigned char*>(signing_input.data()),
                     signing_input.size()) != 1) {
    ERR_clear_error();
    return fail(Errc::internal, "OpenSSL could not sign the client assertion");
  }
  signature.resize(sig_len);
  return Secret(signing_input + "." + base64url_encode(signature));
}

}  // namespace iop::auth
