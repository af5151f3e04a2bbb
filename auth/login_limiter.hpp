#pragma once
// The decision logic of the local-login rate limit (issue #7, item 1), with no I/O and no clock
// of its own: the caller passes `now`, so tests drive it with a fake time.
//
// Two dimensions, both counting attempts still in flight (reserved by begin(), settled by
// finish()), so that many parallel attempts cannot all pass a check made before any of them is
// counted:
//
// - Per account (every source): a growing delay before the password is checked, never a refusal.
//   Anyone who knows an address can fail logins for it, so a refusal here would be a lockout an
//   attacker triggers for someone else; a bounded delay only slows the victim (at most
//   `account_delay_cap`) while slowing guessing. A successful login clears it.
// - Per client address: `address_max_failures` failed or in-flight attempts within
//   `failure_window` and further attempts are refused without a check. Loopback addresses are
//   not limited this way: every local mail client arrives from 127.0.0.1 or ::1, so a per-address
//   count there would let one local script lock every local user out; for loopback the account
//   (above) is the key.
//
// Memory is bounded: entries expire `failure_window` after their last failure, and each table
// holds at most `max_entries` (expired entries go first, then the least recently failed).
//
// Not thread-safe: the caller serializes calls (LocalAuthenticator holds a mutex).

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

namespace iop::auth {

struct LoginLimits {
  // Per address (not loopback): failed + in-flight attempts allowed within the window.
  int address_max_failures = 10;
  // A failure is forgotten this long after the key's last failure.
  std::chrono::milliseconds failure_window{std::chrono::minutes(5)};
  // Per account: recent failures (+ attempts in flight) that cost no extra delay (typos, and
  // the few parallel connections a mail client opens at once).
  int account_free_failures = 3;
  // The first delayed attempt waits this long; each further failure doubles it...
  std::chrono::milliseconds account_delay_base{std::chrono::milliseconds(250)};
  // ...up to this bound (the most an attacker can slow someone else's login).
  std::chrono::milliseconds account_delay_cap{std::chrono::seconds(4)};
  // Upper bound on the entries of each table.
  std::size_t max_entries = 10'000;
};

// The per-account delay for an attempt that sees `recent` failures and attempts in flight on
// the account: 0 up to `account_free_failures`, then base * 2^(recent - free), at most the cap.
std::chrono::milliseconds account_delay(int recent, const LoginLimits& limits);

// Whether `address` (as the listener formats it: "127.0.0.1", "::1", "::ffff:127.0.0.1",
// optionally with brackets) is a loopback address.
bool is_loopback_address(std::string_view address);

class LoginLimiter {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  explicit LoginLimiter(LoginLimits limits);

  // One attempt's reservation; hand it back to finish() exactly once.
  struct Ticket {
    std::string address_key;             // empty: no per-address limit (loopback, or refused)
    std::string account_key;             // empty when refused
    bool admitted = false;               // false: refuse without checking the password
    std::chrono::milliseconds delay{0};  // wait this long before checking
  };

  // Reserves a slot for an attempt from `address` on `account` (the normalized email, or any
  // stable key for a username that is not one). A refused attempt reserves nothing but keeps the
  // address's failures from expiring.
  Ticket begin(std::string_view address, std::string_view account, TimePoint now);

  enum class Outcome {
    success,  // right password: clears the account's failures
    failure,  // wrong password, unknown account, ...: counts
    neutral,  // not a verdict (the database could not be read): only releases the slot
  };
  // Settles a ticket from begin(): releases its in-flight slots and records `outcome`.
  void finish(const Ticket& ticket, Outcome outcome, TimePoint now);

  std::size_t address_entries() const { return addresses_.size(); }
  std::size_t account_entries() const { return accounts_.size(); }

 private:
  struct Entry {
    int failures = 0;
    int in_flight = 0;
    TimePoint last_failure{};
  };
  using Table = std::unordered_map<std::string, Entry>;

  // The entry for `key`, with failures older than the window forgotten; makes room if needed.
  Entry& entry(Table& table, std::string_view key, TimePoint now);
  void settle(Table& table, const std::string& key, Outcome outcome, TimePoint now);
  bool expired(const Entry& e, TimePoint now) const;

  LoginLimits limits_;
  Table addresses_;
  Table accounts_;
};

}  // namespace iop::auth
