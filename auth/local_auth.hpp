#pragma once
// Checks the local password a mail client sends against the account's scrypt hash.
//
// scrypt is slow on purpose, so a successful verification is remembered, as Dovecot's auth
// cache does: an HMAC (process-random key) of the email, the stored hash and the password, kept
// for `cache_ttl`. Because the stored hash is part of the key, `account passwd` invalidates it,
// and a removed account is never found.
//
// Rate limits (issue #7, auth/login_limiter.hpp): attempts in flight count; an account with
// recent failures is checked only after a growing, capped delay (never refused: an attacker who
// knows the address must not be able to lock its owner out); a non-loopback client address with
// too many failed or in-flight attempts is refused without a check. Failed logins are answered
// after `failure_delay`.
//
// Timing (issue #7, item 8): an unknown account, one without a local password, or a username
// that is not an email runs scrypt against a dummy hash made at construction with
// `hash_params`, so it costs what a wrong password costs. A successful login whose stored hash is
// weaker than `hash_params` stores a fresh hash (issue #7, item 9).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "auth/login_limiter.hpp"
#include "auth/password_hash.hpp"
#include "common/asio.hpp"
#include "common/secret.hpp"
#include "storage/credentials_store.hpp"

namespace iop::auth {

struct LocalAuthSettings {
  std::chrono::milliseconds cache_ttl{std::chrono::minutes(5)};
  std::chrono::milliseconds failure_delay{std::chrono::seconds(1)};
  LoginLimits limits;
  // Parameters of upgraded hashes and of the dummy hash (tests pass weaker ones).
  ScryptParams hash_params;
};

enum class LocalAuthResult {
  ok,
  bad_credentials,  // unknown account, no local password set, or wrong password
  rate_limited,     // too many failed or in-flight attempts from this (non-loopback) address
  unavailable,      // the database could not be read
};

struct LocalAuthOutcome {
  LocalAuthResult result = LocalAuthResult::bad_credentials;
  std::string email;  // normalized, when the username was an email
  // The email names an existing account (whatever the result): the connection log then files a
  // wrong password under that account, so guessing against a mailbox shows per account. Never
  // told to the client, which gets the same answer either way.
  bool account_exists = false;
  std::string upstream_host;  // the account's own upstream, empty for its provider's
  int upstream_port = 0;
  std::string provider;  // the account's provider profile (auth/provider.hpp)
  bool from_cache = false;
  // The per-account delay this attempt waited before its check (0 when none).
  std::chrono::milliseconds delay{0};
};

class LocalAuthenticator {
 public:
  // `blocking` runs database reads and scrypt (never an I/O thread). Computes the dummy hash
  // (one scrypt with `settings.hash_params`); throws std::runtime_error when that fails.
  LocalAuthenticator(storage::CredentialsStore& store, net::any_io_executor blocking,
                     LocalAuthSettings settings);

  // Suspends; on failure, only after the failure delay.
  awaitable<LocalAuthOutcome> check(std::string username, Secret password,
                                    std::string client_address);

  // How many scrypt verifications ran (real or dummy): lets tests see which attempts reached
  // the check without timing them.
  std::uint64_t verifications() const { return verifications_.load(); }

 private:
  std::string cache_key(std::string_view email, std::string_view stored_hash,
                        const Secret& password) const;
  void settle(const LoginLimiter::Ticket& ticket, LoginLimiter::Outcome outcome);
  // Waits failure_delay (the same for every kind of failure).
  awaitable<void> failure_pause();
  // Stores a hash of `password` made with settings_.hash_params if `stored_hash` is weaker and
  // still the account's hash; returns the hash now stored.
  awaitable<std::string> upgrade_hash(const std::string& email, const std::string& stored_hash,
                                      const Secret& password);

  storage::CredentialsStore& store_;
  net::any_io_executor blocking_;
  LocalAuthSettings settings_;
  Secret hmac_key_;
  std::string dummy_hash_;
  std::atomic<std::uint64_t> verifications_{0};

  std::mutex mutex_;  // never held across co_await; guards verified_ and limiter_
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> verified_;
  LoginLimiter limiter_;
};

}  // namespace iop::auth
