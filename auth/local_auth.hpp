#pragma once
// Checks the local password a mail client sends against the account's scrypt hash.
//
// scrypt is slow on purpose, so a successful verification is remembered, as Dovecot's auth
// cache does: an HMAC (process-random key) of the email, the stored hash and the password, kept
// for `cache_ttl`. Because the stored hash is part of the key, `account passwd` invalidates it,
// and a removed account is never found. Failed logins are answered after `failure_delay`, and a
// client address with too many recent failures is refused without a check.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/asio.hpp"
#include "common/secret.hpp"
#include "storage/credentials_store.hpp"

namespace iop::auth {

struct LocalAuthSettings {
  std::chrono::milliseconds cache_ttl{std::chrono::minutes(5)};
  std::chrono::milliseconds failure_delay{std::chrono::seconds(1)};
  int max_failures = 10;  // per client address within `failure_window`
  std::chrono::milliseconds failure_window{std::chrono::minutes(5)};
};

enum class LocalAuthResult {
  ok,
  bad_credentials,  // unknown account, no local password set, or wrong password
  rate_limited,     // too many failures from this address
  unavailable,      // the database could not be read
};

struct LocalAuthOutcome {
  LocalAuthResult result = LocalAuthResult::bad_credentials;
  std::string email;          // normalized, when the username was an email
  std::string upstream_host;  // the account's own upstream, empty for its provider's
  int upstream_port = 0;
  std::string provider;  // the account's provider profile (auth/provider.hpp)
  bool from_cache = false;
};

class LocalAuthenticator {
 public:
  // `blocking` runs database reads and scrypt (never an I/O thread).
  LocalAuthenticator(storage::CredentialsStore& store, net::any_io_executor blocking,
                     LocalAuthSettings settings);

  // Suspends; on failure, only after the failure delay.
  awaitable<LocalAuthOutcome> check(std::string username, Secret password,
                                    std::string client_address);

 private:
  std::string cache_key(std::string_view email, std::string_view stored_hash,
                        const Secret& password) const;
  // Records the failure, waits failure_delay, and returns `outcome` with `why`.
  awaitable<LocalAuthOutcome> fail_slowly(LocalAuthOutcome outcome, LocalAuthResult why,
                                          std::string client_address);
  bool rate_limited(const std::string& address);
  void record_failure(const std::string& address);

  storage::CredentialsStore& store_;
  net::any_io_executor blocking_;
  LocalAuthSettings settings_;
  Secret hmac_key_;

  std::mutex mutex_;  // never held across co_await
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> verified_;
  struct Failures {
    int count = 0;
    std::chrono::steady_clock::time_point window_start;
  };
  std::unordered_map<std::string, Failures> failures_;
};

}  // namespace iop::auth
