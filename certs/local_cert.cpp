#include "certs/local_cert.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs/detail_openssl.hpp"
#include "common/durable_file.hpp"
#include "common/wipe.hpp"

namespace iop::certs {

namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

using namespace detail;

namespace {

// The one-line subject of generated certificates' organisation, so users can find them in a
// trust store.
constexpr const char* organisation = "imap-oauth2-proxy";

// ---- small helpers ----------------------------------------------------------------------------

std::string format_time(Clock::time_point t) {
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(Clock::to_time_t(t)));
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

std::optional<Clock::time_point> to_time_point(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    return std::nullopt;
  }
  return Clock::from_time_t(::timegm(&tm));
}

// Whether `p` exists; a stat failure other than "not there" counts as existing so the later
// read reports the real reason.
bool present(const fs::path& p) {
  std::error_code ec;
  const bool exists = fs::exists(p, ec);
  return exists || (ec && ec != std::errc::no_such_file_or_directory);
}

Result<std::string> read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail(Errc::config_error,
                fmt::format("cannot read {}: {}", quoted(path), std::strerror(errno)));
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

BioPtr memory_bio(const std::string& data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}

// The first certificate of the PEM file `path`.
Result<X509Ptr> load_certificate(const fs::path& path) {
  IOP_TRY_ASSIGN(auto text, read_text(path));
  const BioPtr bio = memory_bio(text);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return fail(Errc::config_error, fmt::format("{} does not hold a PEM certificate ({})",
                                                quoted(path), openssl_error_text()));
  }
  return cert;
}

// The private key in the PEM file `path`; the file's bytes are wiped after parsing.
Result<EvpPkeyPtr> load_private_key(const fs::path& path) {
  IOP_TRY_ASSIGN(auto text, read_text(path));
  const BioPtr bio = memory_bio(text);
  // A null passphrase callback and no passphrase: an encrypted key fails here instead of
  // prompting on a terminal the service may not have.
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>("")));
  secure_wipe(text);
  if (!key) {
    return fail(Errc::config_error,
                fmt::format("{} does not hold an unencrypted PEM private key ({})", quoted(path),
                            openssl_error_text()));
  }
  return key;
}

Result<std::string> certificate_pem(X509* cert) {
  const BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return fail(Errc::internal, "cannot encode a certificate: " + openssl_error_text());
  }
  return bio_text(bio.get());
}

Result<std::string> private_key_pem(EVP_PKEY* key) {
  const BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return fail(Errc::internal, "cannot encode a private key: " + openssl_error_text());
  }
  std::string pem = bio_text(bio.get());
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len > 0) {
    secure_wipe(std::span(data, static_cast<std::size_t>(len)));
  }
  return pem;
}

// Writes `data` to `path` with `mode`: a temporary file in the same folder (created 0600, so a
// key is never readable by others, not even briefly), synced, chmod-ed, then renamed over
// `path`. Creates the folder when missing.
Result<void> write_atomically(const fs::path& path, const std::string& data, mode_t mode) {
  const fs::path dir = path.parent_path();
  std::error_code ec;
  if (!dir.empty()) {
    fs::create_directories(dir, ec);
    if (ec) {
      return fail(Errc::storage_unavailable,
                  fmt::format("cannot create the folder {}: {}", quoted(dir), ec.message()));
    }
  }
  std::string tmpl = (dir / ("." + path.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    return fail(Errc::storage_unavailable,
                fmt::format("cannot create a file in {}: {}", quoted(dir), std::strerror(errno)));
  }
  const auto give_up = [&](const char* what) -> Result<void> {
    const int err = errno;
    ::close(fd);
    ::unlink(tmpl.c_str());
    return fail(Errc::storage_unavailable,
                fmt::format("cannot {} {}: {}", what, quoted(path), std::strerror(err)));
  };
  std::size_t off = 0;
  while (off < data.size()) {
    const auto n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return give_up("write");
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, mode) != 0) {
    return give_up("set the mode of");
  }
  if (::fsync(fd) != 0) {
    return give_up("sync");
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    return fail(Errc::storage_unavailable,
                fmt::format("cannot write {}: {}", quoted(path), std::strerror(err)));
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    return fail(Errc::storage_unavailable,
                fmt::format("cannot rename a file to {}: {}", quoted(path), std::strerror(err)));
  }
  fsync_dir(dir);  // best effort: the certificate can be made again
  return {};
}

// ---- generation -------------------------------------------------------------------------------

Result<EvpPkeyPtr> new_p256_key() {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) {
    return fail(Errc::internal, "cannot generate an ECDSA P-256 key: " + openssl_error_text());
  }
  return key;
}

// A random positive 159-bit serial number (RFC 5280 §4.1.2.2: at most 20 octets; CA/B forum
// asks for 64+ bits of randomness).
bool set_random_serial(X509* cert) {
  const BnPtr bn(BN_new());
  if (!bn || BN_rand(bn.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
    return false;
  }
  return BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) != nullptr;
}

bool set_name(X509_NAME* name, const std::string& common_name) {
  const auto add = [name](const char* field, const std::string& value) {
    return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                      0) == 1;
  };
  return add("O", organisation) && add("CN", common_name);
}

// Adds the extension `nid` = `value` (openssl x509v3_config syntax) to `cert`, with `issuer`
// as the issuer for authorityKeyIdentifier.
bool add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  const X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

struct Extension {
  int nid;
  std::string value;
};

// A version 3 certificate for `subject_key` named `common_name`, valid [not_before, not_after],
// signed by `issuer_key` (with `issuer` as issuer, or itself when `issuer` is null).
Result<X509Ptr> make_certificate(EVP_PKEY* subject_key, const std::string& common_name,
                                 Clock::time_point not_before, Clock::time_point not_after,
                                 X509* issuer, EVP_PKEY* issuer_key,
                                 const std::vector<Extension>& extensions) {
  X509Ptr cert(X509_new());
  const auto failed = [] {
    return fail(Errc::internal, "cannot build a certificate: " + openssl_error_text());
  };
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      !set_random_serial(cert.get()) || X509_set_pubkey(cert.get(), subject_key) != 1 ||
      !set_name(X509_get_subject_name(cert.get()), common_name) ||
      X509_set_issuer_name(cert.get(), issuer != nullptr
                                           ? X509_get_subject_name(issuer)
                                           : X509_get_subject_name(cert.get())) != 1 ||
      ASN1_TIME_set(X509_getm_notBefore(cert.get()), Clock::to_time_t(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), Clock::to_time_t(not_after)) == nullptr) {
    return failed();
  }
  X509* const issuer_cert = issuer != nullptr ? issuer : cert.get();
  for (const auto& ext : extensions) {
    if (!add_extension(cert.get(), issuer_cert, ext.nid, ext.value)) {
      return failed();
    }
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) {
    return failed();
  }
  return cert;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  RAND_bytes(raw.data(), static_cast<int>(raw.size()));
  std::string out;
  for (const unsigned char b : raw) {
    out += fmt::format("{:02x}", b);
  }
  return out;
}

// Backdating absorbs small clock differences between this machine and a client's idea of now.
constexpr std::chrono::hours backdate{1};

struct Ca {
  X509Ptr cert;
  EvpPkeyPtr key;
};

Result<Ca> create_ca(const CertificateOptions& options) {
  IOP_TRY_ASSIGN(auto key, new_p256_key());
  // RFC 5280 §4.2.1.10: name constraints MUST be critical. IP constraints are address/mask.
  const std::string constraints = fmt::format(
      "critical,permitted;DNS:{},permitted;IP:{}/255.255.255.255,"
      "permitted;IP:{}/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
      local_dns_name, local_ipv4, local_ipv6);
  IOP_TRY_ASSIGN(auto cert,
                 make_certificate(key.get(), "imap-oauth2-proxy local CA " + random_hex(4),
                                  options.now - backdate, options.now + options.ca_validity,
                                  nullptr, key.get(),
                                  {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                                   {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                   {NID_subject_key_identifier, "hash"},
                                   {NID_authority_key_identifier, "keyid:always"},
                                   {NID_name_constraints, constraints}}));
  return Ca{std::move(cert), std::move(key)};
}

// The existing CA beside `cert_path` when it is complete and usable until at least
// now + renew_before; a new one (written to disk) when there is none or it is expiring.
Result<Ca> obtain_ca(const fs::path& cert_path, const CertificateOptions& options) {
  const fs::path ca_cert = ca_certificate_path(cert_path);
  const fs::path ca_key = ca_key_path(cert_path);
  const bool have_cert = present(ca_cert);
  const bool have_key = present(ca_key);
  if (have_cert != have_key) {
    return fail(
        Errc::config_error,
        fmt::format("found {} but not {}: restore it, or delete {} to have a new local CA "
                    "generated (clients that trusted the old one must then trust the new "
                    "one)",
                    quoted(have_cert ? ca_cert : ca_key), quoted(have_cert ? ca_key : ca_cert),
                    quoted(have_cert ? ca_cert : ca_key)));
  }
  if (have_cert) {
    IOP_TRY_ASSIGN(auto cert, load_certificate(ca_cert));
    IOP_TRY_ASSIGN(auto key, load_private_key(ca_key));
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
      ERR_clear_error();
      return fail(Errc::config_error, fmt::format("the CA key {} does not belong to {}",
                                                  quoted(ca_key), quoted(ca_cert)));
    }
    const auto not_after = to_time_point(X509_get0_notAfter(cert.get()));
    if (not_after && *not_after > options.now + options.renew_before) {
      return Ca{std::move(cert), std::move(key)};
    }
    // An expiring CA cannot sign anything worth having: replace it (clients must trust the new
    // one; the server certificate chain carries it, and ca.crt is rewritten).
  }
  IOP_TRY_ASSIGN(auto ca, create_ca(options));
  auto key_pem = private_key_pem(ca.key.get());
  auto cert_pem = certificate_pem(ca.cert.get());
  if (!key_pem || !cert_pem) {
    return std::unexpected(!key_pem ? key_pem.error() : cert_pem.error());
  }
  auto wrote = write_atomically(ca_key, *key_pem, 0600);
  secure_wipe(*key_pem);
  IOP_TRY(wrote);
  IOP_TRY(write_atomically(ca_cert, *cert_pem, 0644));
  return ca;
}

// Issues a server certificate with `ca` and writes the key, then the chain (server + CA).
Result<void> issue_server_certificate(const fs::path& cert_path, const fs::path& key_path,
                                      const Ca& ca, const CertificateOptions& options) {
  IOP_TRY_ASSIGN(auto key, new_p256_key());
  // Never outlive the CA: a chain with an expired CA fails verification anyway.
  Clock::time_point not_after = options.now + options.server_validity;
  if (const auto ca_not_after = to_time_point(X509_get0_notAfter(ca.cert.get()))) {
    not_after = std::min(not_after, *ca_not_after);
  }
  IOP_TRY_ASSIGN(
      auto cert,
      make_certificate(
          key.get(), local_dns_name, options.now - backdate, not_after, ca.cert.get(), ca.key.get(),
          {{NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, "critical,digitalSignature"},
           {NID_ext_key_usage, "serverAuth"},
           {NID_subject_key_identifier, "hash"},
           {NID_authority_key_identifier, "keyid:always"},
           {NID_subject_alt_name,
            fmt::format("DNS:{},IP:{},IP:{}", local_dns_name, local_ipv4, local_ipv6)}}));
  auto key_pem = private_key_pem(key.get());
  auto leaf_pem = certificate_pem(cert.get());
  auto ca_pem = certificate_pem(ca.cert.get());
  if (!key_pem || !leaf_pem || !ca_pem) {
    return fail(Errc::internal, "cannot encode the server certificate or key");
  }
  auto wrote = write_atomically(key_path, *key_pem, 0600);
  secure_wipe(*key_pem);
  if (!wrote) {
    return wrote;
  }
  return write_atomically(cert_path, *leaf_pem + *ca_pem, 0644);
}

// Whether `cert` was signed by the CA beside `cert_path` (so we may re-issue it).
bool issued_by_local_ca(X509* cert, const fs::path& cert_path) {
  const fs::path ca_cert = ca_certificate_path(cert_path);
  if (!present(ca_cert) || !present(ca_key_path(cert_path))) {
    return false;
  }
  auto ca = load_certificate(ca_cert);
  if (!ca) {
    return false;
  }
  EVP_PKEY* ca_public = X509_get0_pubkey(ca->get());
  const bool ours = ca_public != nullptr && X509_check_issued(ca->get(), cert) == X509_V_OK &&
                    X509_verify(cert, ca_public) == 1;
  ERR_clear_error();
  return ours;
}

std::string key_type_of(EVP_PKEY* key) {
  const int id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_EC) {
    char group[64] = {};
    std::size_t len = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) == 1) {
      const char* nist = EC_curve_nid2nist(OBJ_txt2nid(group));
      return std::string("EC ") + (nist != nullptr ? nist : group);
    }
    return "EC";
  }
  if (id == EVP_PKEY_RSA) {
    return fmt::format("RSA {}", EVP_PKEY_get_bits(key));
  }
  const char* name = OBJ_nid2sn(id);
  return name != nullptr ? name : "unknown";
}

std::string name_text(const X509_NAME* name) {
  const BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) {
    return {};
  }
  return bio_text(bio.get());
}

}  // namespace

fs::path ca_certificate_path(const fs::path& cert_path) {
  return cert_path.parent_path() / "ca.crt";
}

fs::path ca_key_path(const fs::path& cert_path) { return cert_path.parent_path() / "ca.key"; }

Result<bool> ensure_server_certificate(const fs::path& cert_path, const fs::path& key_path,
                                       const CertificateOptions& options) {
  ERR_clear_error();
  const bool have_cert = present(cert_path);
  const bool have_key = present(key_path);
  if (have_cert != have_key) {
    const fs::path& found = have_cert ? cert_path : key_path;
    const fs::path& missing = have_cert ? key_path : cert_path;
    return fail(Errc::config_error,
                fmt::format("found {} but not {}: the certificate and its private key go "
                            "together; restore the missing one, or delete {} to have a new "
                            "local certificate generated",
                            quoted(found), quoted(missing), quoted(found)));
  }
  if (!have_cert) {
    IOP_TRY_ASSIGN(auto ca, obtain_ca(cert_path, options));
    IOP_TRY(issue_server_certificate(cert_path, key_path, ca, options));
    return true;
  }

  IOP_TRY_ASSIGN(auto cert, load_certificate(cert_path));
  IOP_TRY_ASSIGN(auto key, load_private_key(key_path));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return fail(Errc::config_error,
                fmt::format("the private key {} does not belong to the certificate {}: restore "
                            "the matching pair, or delete both to have a new local certificate "
                            "generated",
                            quoted(key_path), quoted(cert_path)));
  }
  const auto not_before = to_time_point(X509_get0_notBefore(cert.get()));
  const auto not_after = to_time_point(X509_get0_notAfter(cert.get()));
  if (!not_before || !not_after) {
    return fail(Errc::config_error,
                fmt::format("{} has validity dates that cannot be read", quoted(cert_path)));
  }
  if (*not_before > options.now) {
    return fail(Errc::config_error,
                fmt::format("the certificate {} is not valid before {} (is the clock right?)",
                            quoted(cert_path), format_time(*not_before)));
  }
  if (*not_after > options.now + options.renew_before) {
    return false;
  }
  if (issued_by_local_ca(cert.get(), cert_path)) {
    IOP_TRY_ASSIGN(auto ca, obtain_ca(cert_path, options));
    IOP_TRY(issue_server_certificate(cert_path, key_path, ca, options));
    return true;
  }
  if (*not_after <= options.now) {
    return fail(Errc::config_error,
                fmt::format("the certificate {} expired on {}: renew it, or delete it and {} to "
                            "have a new local certificate generated",
                            quoted(cert_path), format_time(*not_after), quoted(key_path)));
  }
  // Someone else's certificate, still valid for a little while: theirs to renew.
  return false;
}

Result<CertificateInfo> inspect_certificate(const fs::path& cert_path) {
  ERR_clear_error();
  IOP_TRY_ASSIGN(auto cert, load_certificate(cert_path));
  X509* const x = cert.get();
  CertificateInfo info;
  info.subject = name_text(X509_get_subject_name(x));
  info.issuer = name_text(X509_get_issuer_name(x));
  info.not_before = to_time_point(X509_get0_notBefore(x)).value_or(Clock::time_point{});
  info.not_after = to_time_point(X509_get0_notAfter(x)).value_or(Clock::time_point{});
  info.is_ca = (X509_get_extension_flags(x) & EXFLAG_CA) != 0;
  if (EVP_PKEY* key = X509_get0_pubkey(x)) {
    info.key_type = key_type_of(key);
  }
  const GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type == GEN_DNS) {
      const ASN1_IA5STRING* s = name->d.dNSName;
      info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                  static_cast<std::size_t>(ASN1_STRING_length(s)));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* s = name->d.iPAddress;
      const int len = ASN1_STRING_length(s);
      char text[INET6_ADDRSTRLEN] = {};
      if ((len == 4 || len == 16) &&
          ::inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(s), text, sizeof text) !=
              nullptr) {
        info.ip_addresses.emplace_back(text);
      }
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (X509_digest(x, EVP_sha256(), digest, &digest_len) == 1) {
    for (unsigned int i = 0; i < digest_len; ++i) {
      info.sha256_fingerprint += fmt::format("{}{:02X}", i == 0 ? "" : ":", digest[i]);
    }
  }
  ERR_clear_error();
  return info;
}

}  // namespace iop::certs
