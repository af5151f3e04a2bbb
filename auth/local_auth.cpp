#include "auth/local_auth.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "auth/password_hash.hpp"
#include "common/blocking.hpp"
#include "common/email.hpp"
#include "common/wipe.hpp"

namespace iop::auth {

LocalAuthenticator::LocalAuthenticator(storage::CredentialsStore& store,
                                       net::any_io_executor blocking, LocalAuthSettings settings)
    : store_(store),
      blocking_(std::move(blocking)),
      settings_(settings),
      limiter_(settings.limits) {
  std::string key(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1) {
    throw std::runtime_error("no random bytes for the login cache key");
  }
  hmac_key_ = Secret(std::move(key));
  // A hash of a random password nobody knows, with the parameters of new hashes: checking a
  // password against it costs what checking against a real account's hash costs.
  std::string random(24, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(random.data()),
                 static_cast<int>(random.size())) != 1) {
    throw std::runtime_error("no random bytes for the dummy password hash");
  }
  auto dummy = hash_password(Secret(std::move(random)), settings_.hash_params);
  if (!dummy) {
    throw std::runtime_error("cannot compute the dummy password hash: " + dummy.error().message);
  }
  dummy_hash_ = std::move(*dummy);
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
  secure_wipe(input);
  return std::string(reinterpret_cast<const char*>(mac), mac_len);
}

void LocalAuthenticator::settle(const LoginLimiter::Ticket& ticket, LoginLimiter::Outcome outcome) {
  std::lock_guard lock(mutex_);
  limiter_.finish(ticket, outcome, std::chrono::steady_clock::now());
}

awaitable<void> LocalAuthenticator::failure_pause() {
  net::steady_timer delay(co_await net::this_coro::executor);
  delay.expires_after(settings_.failure_delay);
  boost::system::error_code ec;
  co_await delay.async_wait(net::redirect_error(net::use_awaitable, ec));
}

awaitable<std::string> LocalAuthenticator::upgrade_hash(const std::string& email,
                                                        const std::string& stored_hash,
                                                        const Secret& password) {
  if (!needs_rehash(stored_hash, settings_.hash_params)) {
    co_return stored_hash;
  }
  auto& store = store_;
  const ScryptParams params = settings_.hash_params;
  auto rehash = [&store, &email, &stored_hash, &password, params]() -> Result<std::string> {
    auto fresh = hash_password(password, params);
    if (!fresh) {
      return fresh;
    }
    // Not if the hash changed meanwhile (`account passwd` while this login was checked): the
    // password proved here may be the old one. The store has no compare-and-set; this re-read
    // narrows the window to one database round trip.
    IOP_TRY_ASSIGN(const auto current, store.get(email));
    if (current.local_password_hash != stored_hash) {
      return std::string();  // changed meanwhile: leave the new one alone
    }
    IOP_TRY(store.set_local_password_hash(email, *fresh));
    return fresh;
  };
  auto upgraded = co_await run_on_pool(blocking_, rehash);
  if (!upgraded) {
    spdlog::warn("login of {}: the local password hash was not upgraded: {}", email,
                 upgraded.error().message);
    co_return stored_hash;
  }
  if (upgraded->empty()) {
    spdlog::info("login of {}: the local password changed during the login; not upgraded", email);
    co_return stored_hash;
  }
  spdlog::info("login of {}: local password hash upgraded to scrypt N=2^{}", email, params.log2_n);
  co_return std::move(*upgraded);
}

awaitable<LocalAuthOutcome> LocalAuthenticator::check(std::string username, Secret password,
                                                      std::string client_address) {
  LocalAuthOutcome outcome;
  auto email = normalize_email(username);
  // Every username that is not an email shares one key: none of them is an account, so its
  // delay slows nobody, and it takes one entry.
  const std::string account_key = email ? *email : std::string("(not an email address)");

  LoginLimiter::Ticket ticket;
  {
    std::lock_guard lock(mutex_);
    ticket = limiter_.begin(client_address, account_key, std::chrono::steady_clock::now());
  }
  // Whatever happens below (an exception from the pool included), the slot is released.
  struct Release {
    LocalAuthenticator* self;
    const LoginLimiter::Ticket* ticket;
    bool settled = false;
    void operator()(LoginLimiter::Outcome o) {
      settled = true;
      self->settle(*ticket, o);
    }
    ~Release() {
      if (!settled) self->settle(*ticket, LoginLimiter::Outcome::neutral);
    }
  } release{this, &ticket};

  if (!ticket.admitted) {
    // Only the address (from the socket) is logged: the username is the client's to choose.
    spdlog::warn("login refused without a check: too many failed logins from {}", client_address);
    co_await failure_pause();
    outcome.result = LocalAuthResult::rate_limited;
    co_return outcome;
  }
  if (ticket.delay.count() > 0) {
    outcome.delay = ticket.delay;
    net::steady_timer wait(co_await net::this_coro::executor);
    wait.expires_after(ticket.delay);
    boost::system::error_code ec;
    co_await wait.async_wait(net::redirect_error(net::use_awaitable, ec));
  }

  std::string stored_hash;
  if (email) {
    outcome.email = *email;
    auto& store = store_;
    auto row =
        co_await run_on_pool(blocking_, [&store, &email] { return store.login_record(*email); });
    if (row) {
      outcome.account_exists = true;
      outcome.upstream_host = row->upstream_host;
      outcome.upstream_port = row->upstream_port;
      outcome.provider = row->provider;
      stored_hash = row->local_password_hash;
      if (row->from_memory) {
        spdlog::warn(
            "login of {}: the database cannot be read; checking against the account as it was "
            "last read",
            *email);
      }
      if (stored_hash.empty()) {
        spdlog::warn("login of {}: no local password is set (imap-oauth2-proxy account passwd {})",
                     *email, *email);
      }
    } else if (row.error().code != Errc::not_found) {
      spdlog::error("login of {}: cannot read the account: {}", *email, row.error());
      release(LoginLimiter::Outcome::neutral);
      outcome.result = LocalAuthResult::unavailable;
      co_return outcome;
    }
  }

  const bool real = !stored_hash.empty() && !password.empty();
  std::string key;
  if (real) {
    key = cache_key(*email, stored_hash, password);
    bool cached = false;
    {
      std::lock_guard lock(mutex_);
      auto it = verified_.find(key);
      if (it != verified_.end()) {
        cached = std::chrono::steady_clock::now() < it->second;
        if (!cached) {
          verified_.erase(it);
        }
      }
    }
    if (cached) {
      release(LoginLimiter::Outcome::success);
      outcome.result = LocalAuthResult::ok;
      outcome.from_cache = true;
      co_return outcome;
    }
  }

  // Unknown account, no local password, not an email, empty password: the same scrypt work
  // against the dummy hash, and the same answer as a wrong password (issue #7, item 8).
  const std::string& against = real ? stored_hash : dummy_hash_;
  auto& counter = verifications_;
  const bool verified = co_await run_on_pool(blocking_, [&password, &against, &counter] {
    ++counter;
    return verify_password(password, against);
  });
  if (!(real && verified)) {
    release(LoginLimiter::Outcome::failure);
    co_await failure_pause();
    outcome.result = LocalAuthResult::bad_credentials;
    co_return outcome;
  }
  release(LoginLimiter::Outcome::success);

  const std::string current_hash = co_await upgrade_hash(*email, stored_hash, password);
  if (current_hash != stored_hash) {
    key = cache_key(*email, current_hash, password);
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
