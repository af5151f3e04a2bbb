#include "storage/sealed.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <system_error>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <spdlog/spdlog.h>

#include "common/durable_file.hpp"
#include "common/wipe.hpp"

namespace iop::storage {

namespace {

constexpr unsigned char format_version = 0x01;
constexpr std::size_t nonce_size = 12;  // the GCM standard nonce size (NIST SP 800-38D, 8.2)
constexpr std::size_t tag_size = 16;
constexpr std::size_t overhead = 1 + nonce_size + tag_size;

constexpr std::size_t derived_key_size = 32;  // SHA-256 output, the HMAC-SHA256 key size
constexpr std::size_t mac_size = 32;

struct KdfDeleter {
  void operator()(EVP_KDF* kdf) const { EVP_KDF_free(kdf); }
};
struct KdfCtxDeleter {
  void operator()(EVP_KDF_CTX* ctx) const { EVP_KDF_CTX_free(ctx); }
};

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// Closes a file descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  // Closes now, reporting the error close() gives (it can carry a delayed write error).
  int close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

unsigned char* bytes_of(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

// Sealing only fails when OpenSSL itself is broken (no RNG, allocation failure). Storing a
// secret unencrypted, or continuing with a bad nonce, would be worse than stopping.
[[noreturn]] void crypto_failure(const char* what) {
  spdlog::critical("sealed: OpenSSL failure in {}; stopping", what);
  std::terminate();
}

std::string errno_text(int err) { return std::generic_category().message(err); }

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// Writes all of `data`, retrying on EINTR and short writes.
bool write_all(int fd, const unsigned char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Creates each missing folder of `dir` with mode 0700: the key's folder must not let others
// list or swap files.
Result<void> make_private_dirs(const std::filesystem::path& dir) {
  if (dir.empty()) {
    return {};
  }
  std::filesystem::path current;
  for (const auto& part : dir) {
    current /= part;
    if (::mkdir(current.c_str(), 0700) == 0) {
      // Make the new entry durable in its parent.
      fsync_dir(current.parent_path());
      continue;
    }
    if (errno != EEXIST) {
      return fail(Errc::key_error, "cannot create folder " + current.string() +
                                       " for the master key: " + errno_text(errno));
    }
  }
  return {};
}

}  // namespace

Result<MasterKey> MasterKey::load(const std::filesystem::path& path) {
  const std::string p = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      return fail(Errc::key_error,
                  "master key file " + p + " does not exist: run 'imap-oauth2-proxy init'");
    }
    return fail(Errc::key_error, "cannot read master key file " + p + ": " + errno_text(err));
  }
  Fd guard(fd);

  // fstat the opened file, not the path, so the checks apply to the bytes we read.
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return fail(Errc::key_error, "cannot read master key file " + p + ": " + errno_text(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(Errc::key_error, "master key file " + p + " is not a regular file");
  }
  // Like ssh with private keys: a key others can read (or replace) is refused outright rather
  // than used with a warning.
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return fail(Errc::key_error, "master key file " + p +
                                     " is accessible by group or others (mode " +
                                     mode_text(st.st_mode) + "): run 'chmod 600 " + p + "'");
  }

  // Read one byte more than a key so a longer file is detected even if it grew after fstat.
  std::string buf(size + 1, '\0');
  std::size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      int err = errno;
      secure_wipe(buf);
      return fail(Errc::key_error, "cannot read master key file " + p + ": " + errno_text(err));
    }
    if (n == 0) {
      break;
    }
    got += static_cast<std::size_t>(n);
  }
  if (got != size) {
    secure_wipe(buf);
    std::string actual = got > size ? "more than " + std::to_string(size) : std::to_string(got);
    return fail(Errc::key_error, "master key file " + p + " holds " + actual +
                                     " bytes, expected exactly " + std::to_string(size) +
                                     ": it is not a key written by 'imap-oauth2-proxy init'");
  }
  Secret key{std::string_view(buf.data(), size)};
  secure_wipe(buf);
  return MasterKey(std::move(key));
}

Result<MasterKey> MasterKey::create(const std::filesystem::path& path) {
  const std::string p = path.string();
  IOP_TRY(make_private_dirs(path.parent_path()));

  // O_EXCL: never overwrite a key; losing it makes every stored secret unreadable.
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == EEXIST) {
      return fail(Errc::key_error, "master key file " + p + " already exists; not overwriting it");
    }
    return fail(Errc::key_error, "cannot create master key file " + p + ": " + errno_text(err));
  }
  Fd guard(fd);

  std::string bytes(size, '\0');
  auto give_up = [&](const std::string& what) -> Result<MasterKey> {
    int err = errno;
    secure_wipe(bytes);
    // Remove the partial file so a later create() (or load_or_create()) starts clean.
    ::unlink(path.c_str());
    return fail(Errc::key_error,
                "cannot " + what + " master key file " + p + ": " + errno_text(err));
  };
  if (RAND_bytes(bytes_of(bytes), static_cast<int>(size)) != 1) {
    secure_wipe(bytes);
    ::unlink(path.c_str());
    return fail(Errc::key_error, "cannot generate random bytes for master key file " + p);
  }
  // The umask may have removed bits from 0600; set it exactly so load() accepts the file.
  if (::fchmod(fd, 0600) != 0) {
    return give_up("set the mode of");
  }
  if (!write_all(fd, bytes_of(bytes), bytes.size())) {
    return give_up("write");
  }
  if (::fsync(fd) != 0) {
    return give_up("sync");
  }
  if (guard.close() != 0) {
    return give_up("close");
  }
  if (!fsync_dir(path.parent_path())) {
    return give_up("sync the folder of");
  }
  Secret key{std::string_view(bytes)};
  secure_wipe(bytes);
  return MasterKey(std::move(key));
}

Result<MasterKey> MasterKey::load_or_create(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    auto created = create(path);
    if (created) {
      return created;
    }
    // Another process may have created it between our stat() and open(O_EXCL): use theirs.
    struct stat again {};
    if (::stat(path.c_str(), &again) != 0) {
      return created;
    }
  }
  return load(path);
}

Result<MasterKey> MasterKey::from_bytes(Secret bytes) {
  if (bytes.size() != size) {
    return fail(Errc::key_error, "a master key must be exactly " + std::to_string(size) +
                                     " bytes, got " + std::to_string(bytes.size()));
  }
  return MasterKey(std::move(bytes));
}

std::string seal(const MasterKey& key, const Secret& plaintext, std::string_view aad) {
  const std::string& in = plaintext.reveal();
  if (in.size() > static_cast<std::size_t>(INT_MAX) - overhead ||
      aad.size() > static_cast<std::size_t>(INT_MAX)) {
    crypto_failure("seal (input too large)");
  }
  std::string out(overhead + in.size(), '\0');
  unsigned char* dst = bytes_of(out);
  dst[0] = format_version;
  unsigned char* nonce = dst + 1;
  unsigned char* ct = nonce + nonce_size;
  unsigned char* tag = ct + in.size();

  // A fresh random nonce per message. With 96-bit random nonces, one key stays far below the
  // 2^32-messages limit of NIST SP 800-38D 8.3 for any realistic number of token refreshes.
  if (RAND_bytes(nonce, static_cast<int>(nonce_size)) != 1) {
    crypto_failure("RAND_bytes");
  }
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) {
    crypto_failure("EVP_CIPHER_CTX_new");
  }
  int len = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes_of(key.bytes().reveal()),
                         nonce) != 1) {
    crypto_failure("EVP_EncryptInit_ex");
  }
  if (!aad.empty() && EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes_of(aad),
                                        static_cast<int>(aad.size())) != 1) {
    crypto_failure("EVP_EncryptUpdate (aad)");
  }
  if (!in.empty() &&
      EVP_EncryptUpdate(ctx.get(), ct, &len, bytes_of(in), static_cast<int>(in.size())) != 1) {
    crypto_failure("EVP_EncryptUpdate");
  }
  // GCM is a stream mode: Final writes nothing, it only completes the tag computation.
  if (EVP_EncryptFinal_ex(ctx.get(), ct + in.size(), &len) != 1) {
    crypto_failure("EVP_EncryptFinal_ex");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag_size), tag) != 1) {
    crypto_failure("EVP_CTRL_GCM_GET_TAG");
  }
  return out;
}

Result<Secret> open_sealed(const MasterKey& key, std::string_view blob, std::string_view aad) {
  // The messages say what kind of failure it was, never anything about the bytes.
  if (blob.size() < overhead) {
    return fail(Errc::credentials_corrupt, "sealed value is truncated");
  }
  if (static_cast<unsigned char>(blob[0]) != format_version) {
    return fail(Errc::credentials_corrupt, "sealed value has an unknown format version");
  }
  if (blob.size() > static_cast<std::size_t>(INT_MAX) ||
      aad.size() > static_cast<std::size_t>(INT_MAX)) {
    return fail(Errc::credentials_corrupt, "sealed value is too large");
  }
  const unsigned char* src = bytes_of(blob);
  const unsigned char* nonce = src + 1;
  const unsigned char* ct = nonce + nonce_size;
  const std::size_t ct_size = blob.size() - overhead;
  const unsigned char* tag = ct + ct_size;

  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) {
    return fail(Errc::internal, "EVP_CIPHER_CTX_new failed");
  }
  std::string out(ct_size, '\0');
  // Wipe the decrypted bytes on every failure path: an unauthenticated plaintext must not leak.
  auto reject = [&out]() -> Result<Secret> {
    secure_wipe(out);
    return fail(Errc::credentials_corrupt,
                "sealed value does not decrypt (wrong key, moved or altered value)");
  };
  int len = 0;
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes_of(key.bytes().reveal()),
                         nonce) != 1) {
    return reject();
  }
  if (!aad.empty() && EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes_of(aad),
                                        static_cast<int>(aad.size())) != 1) {
    return reject();
  }
  if (ct_size > 0 &&
      EVP_DecryptUpdate(ctx.get(), bytes_of(out), &len, ct, static_cast<int>(ct_size)) != 1) {
    return reject();
  }
  // OpenSSL's ctrl takes a non-const pointer but only reads the tag when setting it.
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag_size),
                          const_cast<unsigned char*>(tag)) != 1) {
    return reject();
  }
  if (EVP_DecryptFinal_ex(ctx.get(), bytes_of(out) + ct_size, &len) != 1) {
    return reject();
  }
  Secret plain{std::string_view(out)};
  secure_wipe(out);
  return plain;
}

Secret derive_key(const MasterKey& key, std::string_view label) {
  // Like sealing, derivation only fails when OpenSSL itself is broken; a missing or weak subkey
  // would make every row MAC meaningless, so stop.
  std::unique_ptr<EVP_KDF, KdfDeleter> kdf(EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr));
  if (!kdf) {
    crypto_failure("EVP_KDF_fetch(HKDF)");
  }
  std::unique_ptr<EVP_KDF_CTX, KdfCtxDeleter> ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) {
    crypto_failure("EVP_KDF_CTX_new");
  }
  // The OSSL_PARAM constructors take non-const pointers but EVP_KDF_derive only reads them.
  const std::string& ikm = key.bytes().reveal();
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<char*>(ikm.data()),
                                        ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(label.data()),
                                        label.size()),
      OSSL_PARAM_construct_end(),
  };
  std::string out(derived_key_size, '\0');
  if (EVP_KDF_derive(ctx.get(), bytes_of(out), out.size(), params) != 1) {
    secure_wipe(out);
    crypto_failure("EVP_KDF_derive(HKDF)");
  }
  Secret derived{std::string_view(out)};
  secure_wipe(out);
  return derived;
}

std::string hmac_sha256(const Secret& key, std::string_view data) {
  const std::string& k = key.reveal();
  if (k.size() > static_cast<std::size_t>(INT_MAX)) {
    crypto_failure("HMAC (key too large)");
  }
  std::string out(mac_size, '\0');
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), k.data(), static_cast<int>(k.size()), bytes_of(data), data.size(),
           bytes_of(out), &len) == nullptr ||
      len != mac_size) {
    crypto_failure("HMAC");
  }
  return out;
}

bool mac_equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace iop::storage
