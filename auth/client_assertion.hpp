#pragma once
// RFC 7523 client assertions: how an application authenticates to Microsoft's token endpoint
// with a certificate instead of a client secret (Microsoft identity platform "certificate
// credentials"). OpenSSL stays in the .cpp (STYLE.md §3.6).

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

// A certificate and its RSA private key, loaded and checked to belong together. Cheap to copy
// (shared, immutable). The key never leaves it except as signatures.
class ClientCertificate {
 public:
  struct Impl;
  explicit ClientCertificate(std::shared_ptr<const Impl> impl);

  // base64url(SHA-256(DER of the certificate)): the "x5t#S256" JWS header (RFC 7515 §4.1.8),
  // which is how Microsoft finds the certificate registered for the application.
  [[nodiscard]] const std::string& x5t_s256() const;
  // The certificate's notAfter (for warnings about expiry).
  [[nodiscard]] std::chrono::system_clock::time_point not_after() const;
  // For make_client_assertion.
  [[nodiscard]] const Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<const Impl> impl_;
};

// Loads the certificate and the RSA private key from PEM text holding both, in either order.
// The key may be PKCS#8 ("BEGIN PRIVATE KEY") or traditional ("BEGIN RSA PRIVATE KEY"), not
// encrypted. The first certificate is the one used; further certificates (a chain) are ignored.
// `source` names where the text came from in messages (e.g. the file name).
//
// Fails with Errc::invalid_argument: "no certificate in SOURCE ...", "no RSA private key in
// SOURCE ...", an encrypted or non-RSA key, a key shorter than 2048 bits, or "the private key
// does not match the certificate".
Result<ClientCertificate> load_client_certificate(const Secret& pem,
                                                  std::string_view source = "the PEM text");

// Same as certificate.x5t_s256().
std::string x5t_s256(const ClientCertificate& certificate);

// A signed client assertion (RFC 7523 §2.2, §3) for the token endpoint: a JWT with header
// {"alg":"RS256","typ":"JWT","x5t#S256":...} and claims aud = `token_endpoint`,
// iss = sub = `client_id`, jti (random, UUID-shaped), iat = nbf = `now`, exp = `now` + 10 min.
// Signed with RSASSA-PKCS1-v1_5 SHA-256 (RFC 7518 §3.3). Sent as client_assertion with
// client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer.
// Fails with Errc::internal only if OpenSSL cannot sign.
Result<Secret> make_client_assertion(const ClientCertificate& certificate,
                                     std::string_view client_id, std::string_view token_endpoint,
                                     std::chrono::system_clock::time_point now);

}  // namespace iop::auth
