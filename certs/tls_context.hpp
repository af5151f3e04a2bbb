#pragma once
// TLS contexts for the proxy: one server context for the client-facing listeners and client
// contexts for upstream connections. Built once at startup and shared (read-only afterwards,
// so one context serves every thread).

#include <filesystem>
#include <memory>
#include <string>

#include "common/asio.hpp"
#include "common/result.hpp"

namespace iop::certs {

// A server context: TLS 1.2 and 1.3 only (ssl::context::tls_server plus a minimum version; not
// ssl::context::tlsv12, which also caps the maximum at 1.2), the certificate chain from
// `cert_chain` (PEM: the server certificate first, then intermediates) and the key from `key`
// (unencrypted PEM), checked to match. Compression and renegotiation are off, TLS 1.2 offers
// only ECDHE with AEAD ciphers, and idle connections release their read/write buffers (which
// keeps thousands of idle IMAP sessions cheap). Errc::config_error when a file is missing,
// does not parse or the key does not fit the certificate. Blocking (file I/O).
Result<std::shared_ptr<net::ssl::context>> make_server_context(
    const std::filesystem::path& cert_chain, const std::filesystem::path& key);

// A client context for upstream servers: TLS 1.2+, peer verification on, trusting the system
// store when `ca_file` is empty and only the PEM certificates in `ca_file` otherwise.
// Compression and renegotiation are off. The host name is checked per connection: call
// set_server_identity() on every stream before its handshake. Errc::config_error when
// `ca_file` cannot be loaded; Errc::internal when the system store cannot be set up.
// Blocking (file I/O).
Result<std::shared_ptr<net::ssl::context>> make_client_context(
    const std::filesystem::path& ca_file = {});

// Prepares the client-side `ssl` (a stream's native_handle()) to connect to `host`: sets SNI
// for a DNS name (RFC 6066 §3 forbids IP literals there) and makes certificate verification
// require `host` as DNS name or IP address (subjectAltName; RFC 6125). Call before the
// handshake. Errc::invalid_argument when `host` is empty or OpenSSL rejects it.
Result<void> set_server_identity(SSL* ssl, const std::string& host);

}  // namespace iop::certs
