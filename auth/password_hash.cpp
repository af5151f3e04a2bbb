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
  // maxmem: 128 * N * r * p plus slack; OpenSSL refuses parameters needing more.
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

bool verify_password(const Secret& password, std::string_view encoded) {
  std::string_view rest = encoded;
  if (!next_field(rest, '$').empty() || next_field(rest, '$') != "scrypt") return false;
  std::string_view params_text = next_field(rest, '$');
  const auto salt = base64_decode(next_field(rest, '$'));
  const auto expected = base64_decode(next_field(rest, '$'));
  if (!rest.empty() || !salt || !expected || expected->empty()) return false;

  ScryptParams params;
  const auto ln = next_field(params_text, ',');
  const auto r = next_field(params_text, ',');
  const auto p = next_field(params_text, ',');
  if (!params_text.empty() || !ln.starts_with("ln=") || !r.starts_with("r=") ||
      !p.starts_with("p=")) {
    return false;
  }
  const auto ln_v = parse_int(ln.substr(3));
  const auto r_v = parse_int(r.substr(2));
  const auto p_v = parse_int(p.substr(2));
  // Bounds keep a tampered hash from making us allocate gigabytes or spin for minutes.
  if (!ln_v || !r_v || !p_v || *ln_v < 1 || *ln_v > 20 || *r_v < 1 || *r_v > 32 || *p_v < 1 ||
      *p_v > 16) {
    return false;
  }
  params = {*ln_v, *r_v, *p_v};
  const auto key = derive(password, *salt, params, expected->size());
  return key && key->size() == expected->size() &&
         CRYPTO_memcmp(key->reveal().data(), expected->data(), expected->size()) == 0;
}

}  // namespace iop::auth
