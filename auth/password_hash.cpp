#include "auth/password_hash.hpp"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <charconv>
#include <optional>

#include "auth/base64.hpp"

namespace iop::auth {
namespace {

constexpr std::size_t salt_bytes = 16;
constexpr std::size_t key_bytes = 32;

std::optional<Secret> derive(const Secret& password, std::string_view salt,
                             const ScryptParams& params, std::size_t out_len) {
  std::string out(out_len, '\0');
  const std::uint64_t n = std::uint64_t{1} << params.log2_n;
  // maxmem must be given: OpenSSL's default (32 MiB) refuses N = 2^17, r = 8 (128 MiB). scrypt
  // needs 128 * r * (N + p) bytes (RFC 7914 section 5, OpenSSL's own check); this is above that,
  // and the bounds in parse_hash() keep a stored hash from allocating more than 4 GiB.
  const std::uint64_t maxmem =
      128 * n * static_cast<std::uint64_t>(params.r) * static_cast<std::uint64_t>(params.p) +
      (1u << 20);
  if (EVP_PBE_scrypt(password.reveal().data(), password.size(),
                     reinterpret_cast<const unsigned char*>(salt.data()), salt.size(), n,
                     static_cast<std::uint64_t>(params.r), static_cast<std::uint64_t>(params.p),
                     maxmem, reinterpret_cast<unsigned char*>(out.data()), out.size()) != 1) {
    return std::nullopt;
  }
  return Secret(std::move(out));
}

std::optional<int> parse_int(std::string_view text) {
  int v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::string_view next_field(std::string_view& rest, char sep) {
  const auto pos = rest.find(sep);
  const auto field = rest.substr(0, pos);
  rest = pos == std::string_view::npos ? std::string_view{} : rest.substr(pos + 1);
  return field;
}

}  // namespace

Result<std::string> hash_password(const Secret& password, const ScryptParams& params) {
  if (password.empty()) {
    return fail(Errc::invalid_argument, "the password is empty");
  }
  std::string salt(salt_bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size())) !=
      1) {
    return fail(Errc::internal, "no random bytes for the password salt");
  }
  const auto key = derive(password, salt, params, key_bytes);
  if (!key) {
    return fail(Errc::internal, "scrypt failed (parameters too large?)");
  }
  return fmt::format("$scrypt$ln={},r={},p={}${}${}", params.log2_n, params.r, params.p,
                     base64_encode(salt), base64_encode(key->reveal()));
}

namespace {

struct ParsedHash {
  ScryptParams params;
  std::string salt;
  std::string key;
};

std::optional<ParsedHash> parse_hash(std::string_view encoded) {
  std::string_view rest = encoded;
  if (!next_field(rest, '$').empty() || next_field(rest, '$') != "scrypt") return std::nullopt;
  std::string_view params_text = next_field(rest, '$');
  auto salt = base64_decode(next_field(rest, '$'));
  auto expected = base64_decode(next_field(rest, '$'));
  if (!rest.empty() || !salt || !expected || expected->empty()) return std::nullopt;

  const auto ln = next_field(params_text, ',');
  const auto r = next_field(params_text, ',');
  const auto p = next_field(params_text, ',');
  if (!params_text.empty() || !ln.starts_with("ln=") || !r.starts_with("r=") ||
      !p.starts_with("p=")) {
    return std::nullopt;
  }
  const auto ln_v = parse_int(ln.substr(3));
  const auto r_v = parse_int(r.substr(2));
  const auto p_v = parse_int(p.substr(2));
  // Bounds keep a tampered hash from making us allocate gigabytes or spin for minutes.
  if (!ln_v || !r_v || !p_v || *ln_v < 1 || *ln_v > 20 || *r_v < 1 || *r_v > 32 || *p_v < 1 ||
      *p_v > 16) {
    return std::nullopt;
  }
  return ParsedHash{{*ln_v, *r_v, *p_v}, std::move(*salt), std::move(*expected)};
}

}  // namespace

bool verify_password(const Secret& password, std::string_view encoded) {
  const auto parsed = parse_hash(encoded);
  if (!parsed) return false;
  const auto key = derive(password, parsed->salt, parsed->params, parsed->key.size());
  return key && key->size() == parsed->key.size() &&
         CRYPTO_memcmp(key->reveal().data(), parsed->key.data(), parsed->key.size()) == 0;
}

std::optional<ScryptParams> hash_parameters(std::string_view encoded) {
  const auto parsed = parse_hash(encoded);
  if (!parsed) return std::nullopt;
  return parsed->params;
}

bool needs_rehash(std::string_view encoded, const ScryptParams& target) {
  const auto params = hash_parameters(encoded);
  return !params || params->log2_n < target.log2_n || params->r < target.r || params->p < target.p;
}

}  // namespace iop::auth
