#pragma once
// The proxy's local TLS identity: a small local CA and a server certificate it signs, both
// ECDSA P-256, for the names a mail client on this machine uses (`localhost`, `127.0.0.1`,
// `::1`).
//
// Why a CA rather than one self-signed certificate: users trust the CA once (import `ca.crt`
// into the OS or mail client store), and the server certificate can then be renewed without
// anyone trusting anything again. The CA carries critical name constraints limited to those
// same loopback names, so even a stolen `ca.key` cannot mint a certificate any client honouring
// RFC 5280 name constraints would accept for another host; it is no more powerful than the
// server key beside it.
//
// Files (the folder of the server certificate):
//   <cert_path>     server certificate followed by the CA certificate (PEM, mode 0644)
//   <key_path>      server private key (PKCS#8 PEM, unencrypted, mode 0600)
//   ca.crt          the CA certificate: what clients trust (mode 0644)
//   ca.key          the CA private key, kept for renewals (mode 0600)
// Every file is written to a temporary file in the same folder, synced, then renamed into
// place, so a reader never sees half a file.

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace iop::certs {

// The names every generated server certificate carries in subjectAltName, and the only names
// the local CA's name constraints permit.
inline constexpr const char* local_dns_name = "localhost";
inline constexpr const char* local_ipv4 = "127.0.0.1";
inline constexpr const char* local_ipv6 = "::1";

// The CA certificate that goes with the server certificate at `cert_path`: `ca.crt` in the same
// folder. This is the file users (and test clients) trust.
std::filesystem::path ca_certificate_path(const std::filesystem::path& cert_path);
// The CA private key that goes with the server certificate at `cert_path`: `ca.key` in the same
// folder.
std::filesystem::path ca_key_path(const std::filesystem::path& cert_path);

// Knobs for generation; the defaults are what `serve` and `init` use. `now` is a parameter so
// tests can create certificates in the past and exercise renewal.
struct CertificateOptions {
  std::chrono::days server_validity{730};  // 2 years (under Apple's 825-day limit)
  std::chrono::days ca_validity{3650};     // 10 years
  // A certificate we issued that expires within this margin is re-issued by
  // ensure_server_certificate() (when the CA key is at hand).
  std::chrono::days renew_before{30};
  std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
};

// Makes sure a usable server certificate and key exist at `cert_path` and `key_path`.
// - Both missing: creates them (and the local CA beside them when `ca.crt`/`ca.key` are both
//   missing; an existing CA is reused so earlier trust stays valid). Returns true.
// - Both present: checks that each parses, that the key matches the certificate, and that the
//   certificate is valid now. A certificate this CA issued that expires within
//   `options.renew_before` (or has expired) is re-issued with the same CA and the result is
//   true. Otherwise returns false and touches nothing: user-supplied certificates are used as
//   they are.
// Errors (Errc::config_error, with both paths and what to do): only one of the pair exists;
// they do not match; a file does not parse or cannot be read; a certificate that is not ours
// has expired or is not yet valid; only one of `ca.crt`/`ca.key` exists when the CA is needed.
// Errc::storage_unavailable: the folder cannot be created or a file cannot be written.
// Blocking (file I/O, key generation); call at startup or from a worker.
Result<bool> ensure_server_certificate(const std::filesystem::path& cert_path,
                                       const std::filesystem::path& key_path,
                                       const CertificateOptions& options = {});

// What a certificate file says, for `doctor`, the "generated a certificate" message and tests.
struct CertificateInfo {
  std::string subject;                    // one-line form, e.g. "CN=localhost"
  std::string issuer;                     // one-line form
  std::vector<std::string> dns_names;     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;  // subjectAltName IP entries, textual
  std::string key_type;                   // "EC P-256", "RSA 2048", ...
  bool is_ca = false;                     // basicConstraints CA:TRUE
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point not_after;
  std::string sha256_fingerprint;  // upper-case hex pairs separated by ':'
};

// Reads the first certificate of the PEM file `cert_path`. Errc::config_error when the file
// cannot be read or does not hold a certificate. Blocking (file I/O).
Result<CertificateInfo> inspect_certificate(const std::filesystem::path& cert_path);

}  // namespace iop::certs
