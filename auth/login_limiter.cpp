#include "auth/login_limiter.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace iop::auth {

std::chrono::milliseconds account_delay(int recent, const LoginLimits& limits) {
  const int over = recent - limits.account_free_failures;
  if (over <= 0 || limits.account_delay_base.count() <= 0) {
    return std::chrono::milliseconds(0);
  }
  // Double per failure; stop doubling once past the cap (and long before overflow).
  auto delay = limits.account_delay_base;
  for (int i = 1; i < over && delay < limits.account_delay_cap; ++i) {
    delay *= 2;
  }
  return std::min(delay, limits.account_delay_cap);
}

bool is_loopback_address(std::string_view address) {
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  if (address.empty() || address.size() > 64) {
    return false;
  }
  const std::string text(address);
  std::array<unsigned char, 16> bytes{};
  if (inet_pton(AF_INET, text.c_str(), bytes.data()) == 1) {
    return bytes[0] == 127;  // 127.0.0.0/8 (RFC 1122 3.2.1.3)
  }
  if (inet_pton(AF_INET6, text.c_str(), bytes.data()) != 1) {
    return false;
  }
  static constexpr std::array<unsigned char, 16> v6_loopback{0, 0, 0, 0, 0, 0, 0, 0,
                                                             0, 0, 0, 0, 0, 0, 0, 1};
  if (bytes == v6_loopback) {
    return true;  // ::1 (RFC 4291 2.5.3)
  }
  // An IPv4-mapped 127.x address (::ffff:127.0.0.1), as a dual-stack listener reports it.
  static constexpr std::array<unsigned char, 12> mapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(bytes.data(), mapped.data(), mapped.size()) == 0 && bytes[12] == 127;
}

LoginLimiter::LoginLimiter(LoginLimits limits) : limits_(limits) {}

bool LoginLimiter::expired(const Entry& e, TimePoint now) const {
  return e.failures > 0 && now - e.last_failure >= limits_.failure_window;
}

LoginLimiter::Entry& LoginLimiter::entry(Table& table, std::string_view key, TimePoint now) {
  const std::string k(key);
  if (auto it = table.find(k); it != table.end()) {
    if (expired(it->second, now)) {
      it->second.failures = 0;
    }
    return it->second;
  }
  if (table.size() >= limits_.max_entries) {
    // Entries with nothing in flight and nothing recent first...
    std::erase_if(table, [&](const auto& kv) {
      return kv.second.in_flight == 0 && (kv.second.failures == 0 || expired(kv.second, now));
    });
    // ...then the least recently failed idle one, so a flood of new keys cannot grow the table.
    if (table.size() >= limits_.max_entries) {
      auto oldest = table.end();
      for (auto it = table.begin(); it != table.end(); ++it) {
        if (it->second.in_flight == 0 &&
            (oldest == table.end() || it->second.last_failure < oldest->second.last_failure)) {
          oldest = it;
        }
      }
      if (oldest != table.end()) {
        table.erase(oldest);
      }
    }
  }
  return table[k];
}

LoginLimiter::Ticket LoginLimiter::begin(std::string_view address, std::string_view account,
                                         TimePoint now) {
  Ticket ticket;
  if (!is_loopback_address(address)) {
    Entry& a = entry(addresses_, address, now);
    // In-flight attempts count as failures: they may all turn out to be.
    if (a.failures + a.in_flight >= limits_.address_max_failures) {
      // Still trying while refused: keep the count from expiring under the attacker.
      if (a.failures > 0) {
        a.last_failure = now;
      }
      return ticket;
    }
    ++a.in_flight;
    ticket.address_key = std::string(address);
  }
  Entry& acc = entry(accounts_, account, now);
  ticket.delay = account_delay(acc.failures + acc.in_flight, limits_);
  ++acc.in_flight;
  ticket.account_key = std::string(account);
  ticket.admitted = true;
  return ticket;
}

void LoginLimiter::settle(Table& table, const std::string& key, Outcome outcome, TimePoint now) {
  auto it = table.find(key);
  if (it == table.end()) {
    return;
  }
  Entry& e = it->second;
  e.in_flight = std::max(0, e.in_flight - 1);
  if (expired(e, now)) {
    e.failures = 0;
  }
  switch (outcome) {
    case Outcome::failure:
      // Bounded: past the limits more failures change nothing.
      e.failures = std::min(e.failures + 1, 1'000);
      e.last_failure = now;
      break;
    case Outcome::success:
      e.failures = 0;
      break;
    case Outcome::neutral:
      break;
  }
  if (e.failures == 0 && e.in_flight == 0) {
    table.erase(it);
  }
}

void LoginLimiter::finish(const Ticket& ticket, Outcome outcome, TimePoint now) {
  if (!ticket.admitted) {
    return;
  }
  if (!ticket.address_key.empty()) {
    // A success from an address does not clear its failures: an attacker with one valid account
    // could otherwise interleave its own logins with guesses at others'.
    settle(addresses_, ticket.address_key, outcome == Outcome::success ? Outcome::neutral : outcome,
           now);
  }
  settle(accounts_, ticket.account_key, outcome, now);
}

}  // namespace iop::auth
