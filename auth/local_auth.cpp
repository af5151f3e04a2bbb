#include "auth/local_auth.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "auth/password_hash.hpp"
#include "common/email.hpp"

namespace iop::auth {

LocalAuthenticator::LocalAuthenticator(storage::CredentialsStore& store,
                                       net::any_io_executor blocking, LocalAuthSettings settings)
    : store_(store), blocking_(std::move(blocking)), settings_(settings) {
  std::string key(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1) {
    throw std::runtime_error("no random bytes for the login cache key");
  }
  hmac_key_ = Secret(std::move(key));
}

std::string LocalAuthenticator::cache_key(std::string_view email, std::string_view stored_hash,
                                          const Secret& password) const {
  // Length-prefixed fields: no two (email, hash, password) triples share an input.
  std::string input;
  for (std::string_view part : {email, stored_hash, std::string_view(password.reveal())}) {
    input += std::to_string(part.size());
    input += ':';
    input += part;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), hmac_key_.reveal().data(), static_cast<int>(hmac_key_.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &mac_len);
  OPENSSL_cleanse(input.data(), input.size());
  return std::string(reinterpret_cast<const char*>(mac), mac_len);
}

bool LocalAuthenticator::rate_limited(const std::string& address) {
  std::lock_guard lock(mutex_);
  auto it = failures_.find(address);
  if (it == failures_.end()) {
    return false;
  }
  if (std::chrono::steady_clock::now() - it->second.window_start > settings_.failure_window) {
    failures_.erase(it);
    return false;
  }
  return it->second.count >= settings_.max_failures;
}

void LocalAuthenticator::record_failure(const std::string& address) {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  auto& f = failures_[address];
  if (f.count == 0 || now - f.window_start > settings_.failure_window) {
    f = Failures{0, now};
  }
  ++f.count;
  // Keep the table bounded under a scan from many addresses.
  if (failures_.size() > 100'000) {
    std::erase_if(failures_, [&](const auto& entry) {
      return now - entry.second.window_start > settings_.failure_window;
    });
  }
}

awaitable<LocalAuthOutcome> LocalAuthenticator::fail_slowly(LocalAuthOutcome outcome,
                                                            LocalAuthResult why,
                                                            std::string client_address) {
  record_failure(client_address);
  net::steady_timer delay(co_await net::this_coro::executor);
  delay.expires_after(settings_.failure_delay);
  boost::system::error_code ec;
  co_await delay.async_wait(net::redirect_error(net::use_awaitable, ec));
  outcome.result = why;
  co_return outcome;
}

awaitable<LocalAuthOutcome> LocalAuthenticator::check(std::string username, Secret password,
                                                      std::string client_address) {
  LocalAuthOutcome outcome;
  if (rate_limited(client_address)) {
    spdlog::warn("login refused for {}: too many failed logins from {}", username, client_address);
    {
      auto failed = co_await fail_slowly(std::move(outcome), LocalAuthResult::rate_limited,
                                         std::move(client_address));
      co_return failed;
    }
  }
  auto email = normalize_email(username);
  if (!email || password.empty()) {
    {
      auto failed = co_await fail_slowly(std::move(outcome), LocalAuthResult::bad_credentials,
                                         std::move(client_address));
      co_return failed;
    }
  }
  outcome.email = *email;

  auto& store = store_;
  auto row = co_await net::co_spawn(
      blocking_,
      [&store, &email]() -> awaitable<Result<storage::Credentials>> {
        co_return store.get(*email);
      },
      net::use_awaitable);
  if (!row) {
    if (row.error().code == Errc::not_found) {
      {
        auto failed = co_await fail_slowly(std::move(outcome), LocalAuthResult::bad_credentials,
                                           std::move(client_address));
        co_return failed;
      }
    }
    spdlog::error("login of {}: cannot read the account: {}", *email, row.error());
    outcome.result = LocalAuthResult::unavailable;
    co_return outcome;
  }
  outcome.upstream_host = row->upstream_host;
  outcome.upstream_port = row->upstream_port;
  outcome.provider = row->provider;
  const std::string stored_hash = row->local_password_hash;
  if (stored_hash.empty()) {
    spdlog::warn("login of {}: no local password is set (imap-oauth2-proxy account passwd {})",
                 *email, *email);
    {
      auto failed = co_await fail_slowly(std::move(outcome), LocalAuthResult::bad_credentials,
                                         std::move(client_address));
      co_return failed;
    }
  }

  const auto key = cache_key(*email, stored_hash, password);
  {
    std::lock_guard lock(mutex_);
    auto it = verified_.find(key);
    if (it != verified_.end()) {
      if (std::chrono::steady_clock::now() < it->second) {
        outcome.result = LocalAuthResult::ok;
        outcome.from_cache = true;
        co_return outcome;
      }
      verified_.erase(it);
    }
  }
  const bool match = co_await net::co_spawn(
      blocking_,
      [&password, &stored_hash]() -> awaitable<bool> {
        co_return verify_password(password, stored_hash);
      },
      net::use_awaitable);
  if (!match) {
    {
      auto failed = co_await fail_slowly(std::move(outcome), LocalAuthResult::bad_credentials,
                                         std::move(client_address));
      co_return failed;
    }
  }
  {
    std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (verified_.size() > 10'000) {
      std::erase_if(verified_, [&](const auto& entry) { return entry.second <= now; });
    }
    verified_[key] = now + settings_.cache_ttl;
  }
  outcome.result = LocalAuthResult::ok;
  co_return outcome;
}

}  // namespace iop::auth
