#include "certs/tls_context.hpp"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <system_error>

#include "certs/detail_openssl.hpp"

namespace iop::certs {

namespace {

namespace ssl = net::ssl;

// TLS 1.2 suites: forward secrecy and AEAD only (Mozilla "intermediate" list). TLS 1.3 suites
// keep OpenSSL's defaults, which are all AEAD.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* tls13_ciphersuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* groups = "X25519:P-256:P-384";

// Settings both sides share. Fails with the OpenSSL reason.
Result<void> harden(ssl::context& ctx) {
  SSL_CTX* const native = ctx.native_handle();
  // SSLv2/v3 are gone from OpenSSL 3; no_compression closes CRIME; single_dh_use is a no-op
  // kept for older libraries. No renegotiation: IMAP never needs it and it is an old DoS and
  // injection vector (RFC 5746 aside).
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_compression |
                  ssl::context::single_dh_use);
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
  // Frees the 16+ KiB record buffers of a connection while it has nothing in flight: an idle
  // IMAP session (IDLE for 29 minutes) then costs a few hundred bytes of TLS state.
  SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
  // TLS 1.3: AES-128-GCM first (128-bit security, a quarter less work per byte than AES-256 on
  // every relayed byte, both sides); ChaCha20 stays for peers without AES instructions.
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(native, tls13_ciphersuites) != 1 ||
      SSL_CTX_set_cipher_list(native, tls12_ciphers) != 1 ||
      SSL_CTX_set1_groups_list(native, groups) != 1) {
    return fail(Errc::internal, "cannot configure TLS: " + detail::openssl_error_text());
  }
  return {};
}

std::string reason(const boost::system::error_code& ec) {
  std::string text = ec.message();
  const std::string detail = detail::openssl_error_text();
  if (detail != "no OpenSSL detail" && detail != text) {
    text += " (" + detail + ")";
  }
  return text;
}

}  // namespace

Result<std::shared_ptr<net::ssl::context>> make_server_context(
    const std::filesystem::path& cert_chain, const std::filesystem::path& key) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  IOP_TRY(harden(*ctx));
  // Resumption for reconnecting clients comes from stateless tickets (RFC 8446 §4.6.1, RFC 5077):
  // no server-side cache holding a session per connection for hours. One ticket is enough for
  // one reconnect. None is sent at the end of the handshake: ImapStream sends it after the
  // greeting (proxy/imap_stream.hpp, ticket_due_), so the greeting is not delayed by it.
  SSL_CTX_set_session_cache_mode(ctx->native_handle(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx->native_handle(), 0);
  // Our order, not the client's (many offer AES-256 first), except that a client preferring
  // ChaCha20 (no AES instructions) keeps it.
  SSL_CTX_set_options(ctx->native_handle(),
                      SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert_chain.string(), ec);
  if (ec) {
    return fail(Errc::config_error, fmt::format("cannot load the certificate chain '{}': {}",
                                                cert_chain.string(), reason(ec)));
  }
  ctx->use_private_key_file(key.string(), ssl::context::pem, ec);
  if (ec) {
    return fail(Errc::config_error,
                fmt::format("cannot load the private key '{}': {}", key.string(), reason(ec)));
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    ERR_clear_error();
    return fail(Errc::config_error,
                fmt::format("the private key '{}' does not belong to the certificate '{}'",
                            key.string(), cert_chain.string()));
  }
  return ctx;
}

Result<std::shared_ptr<net::ssl::context>> make_client_context(
    const std::filesystem::path& ca_file) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  IOP_TRY(harden(*ctx));
  // Every upstream login is a full handshake (nothing resumes a session), so the tickets a server
  // sends would only be parsed and kept with each connection: ask for none.
  SSL_CTX_set_session_cache_mode(ctx->native_handle(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_TICKET);
  ctx->set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
    if (ec) {
      return fail(Errc::internal, "cannot use the system trust store: " + reason(ec));
    }
  } else {
    ctx->load_verify_file(ca_file.string(), ec);
    if (ec) {
      return fail(Errc::config_error,
                  fmt::format("cannot load the CA file '{}': {}", ca_file.string(), reason(ec)));
    }
  }
  return ctx;
}

Result<void> set_server_identity(SSL* ssl, const std::string& host) {
  if (ssl == nullptr || host.empty()) {
    return fail(Errc::invalid_argument, "no upstream host name to verify");
  }
  X509_VERIFY_PARAM* const param = SSL_get0_param(ssl);
  // An IP literal (v4 or v6) is matched against iPAddress entries; anything else is a DNS
  // name matched against dNSName entries (no partial wildcards, RFC 6125 §6.4.3).
  if (X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1) {
    return {};
  }
  ERR_clear_error();
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) != 1 ||
      SSL_set_tlsext_host_name(ssl, host.c_str()) != 1) {
    const std::string detail = detail::openssl_error_text();
    return fail(Errc::invalid_argument,
                fmt::format("cannot use '{}' as the upstream host name ({})", host, detail));
  }
  return {};
}

}  // namespace iop::certs
