#pragma once
// Shared by certs/*.cpp only: RAII owners for OpenSSL handles and the error-queue text.

#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace iop::certs::detail {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};

inline void free_general_names(GENERAL_NAMES* names) { GENERAL_NAMES_free(names); }
inline void free_bio(BIO* bio) { BIO_free_all(bio); }

using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, free_bio>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using X509ExtensionPtr =
    std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, free_general_names>>;

// Drains this thread's OpenSSL error queue into one line ("" when it is empty). Never holds
// key material: OpenSSL error strings name the failing function and reason only.
inline std::string openssl_error_text() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!out.empty()) {
      out += "; ";
    }
    out += buf;
  }
  return out.empty() ? "no OpenSSL detail" : out;
}

}  // namespace iop::certs::detail
