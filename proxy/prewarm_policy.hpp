#pragma once
// The decisions of the pre-warm pool (issue #9 item 5), pure: time is a parameter, nothing here
// touches a socket, a clock or a lock. proxy/prewarm.cpp does the I/O and asks these.
//
// A warm connection is one upstream IMAP connection already logged in for an account, parked
// until that account's next client login takes it. The pool keeps at most one per account, only
// for accounts with a client login in the last `window`, and counts it against the account's
// upstream connection limit.

#include <chrono>
#include <optional>
#include <string_view>

namespace iop::proxy {

using PrewarmClock = std::chrono::steady_clock;
using PrewarmTime = PrewarmClock::time_point;

struct PrewarmPolicy {
  // [upstream] prewarm: off by default (opt-in); off means no warm connection is ever made.
  bool enabled = false;
  // [upstream] prewarm_window: only accounts with a client login this recent are kept warm.
  std::chrono::milliseconds window{std::chrono::minutes(30)};
  // How long a parked connection may sit unused. RFC 9051 §5.4 lets a server drop a session
  // after 30 minutes without a command; a connection handed out at minute 29 could be dropped
  // by the server a minute into the client's session, which a fresh login would not be. We
  // replace (log out, log in again) instead of sending NOOP: a NOOP would keep the server's
  // timer going but produce untagged updates and a tagged answer the client never asked for,
  // and the token's expiry forces a new login anyway. What remains visible: a connection handed
  // out after 25 minutes parked leaves the client 5 minutes (not 30) to send its first command
  // before the server may log it out; mail clients send one within seconds of their login.
  std::chrono::milliseconds max_idle{std::chrono::minutes(25)};
  // The token life a handed-out connection must still have: what a fresh login's token is
  // guaranteed ([oauth] session_min_lifetime). Exchange Online ends a session when the token
  // used at its login expires, so a warm connection on an older token would end sooner than a
  // fresh login and the client could tell.
  std::chrono::milliseconds min_token_life{std::chrono::minutes(45)};
  // A warm-up is only worth making when its token keeps it usable at least this long.
  std::chrono::milliseconds min_useful_life{std::chrono::minutes(1)};
  // After a failed warm-up (or a warm connection the server closed), no new one before this.
  std::chrono::milliseconds retry_after{std::chrono::minutes(1)};
  // [upstream] max_connections_per_account: live upstream connections of one account, warm
  // ones included; 0: no limit.
  int max_per_account = 0;
};

// What the pool knows about one account.
struct AccountWarmth {
  std::optional<PrewarmTime> last_login;    // the last client login (any outcome of the check)
  std::optional<PrewarmTime> last_failure;  // the last failed or server-closed warm connection
  int in_use = 0;                           // upstream connections sessions hold (or are making)
  bool warm = false;                        // a warm connection is parked
  bool warming = false;                     // one is being made
};

// Upstream connections of the account counted against its limit: in use, parked and in the
// making.
int counted_connections(const AccountWarmth& account);

// When a warm connection was made and when its token expires (nullopt: a password login, no
// token).
struct WarmStamp {
  PrewarmTime created;
  std::optional<PrewarmTime> token_expires;
};

// Whether to start making a warm connection for `account` now: prewarm on, a client login
// within the window, none parked or in the making, no failure within retry_after, and room
// under the limit for one more.
bool should_warm(const PrewarmPolicy& policy, const AccountWarmth& account, PrewarmTime now);

// Whether a token expiring at `token_expires` is worth warming with at `now` (it leaves the
// connection usable at least min_useful_life). A password login (nullopt) always is.
bool token_worth_warming(const PrewarmPolicy& policy, std::optional<PrewarmTime> token_expires,
                         PrewarmTime now);

enum class WarmVerdict {
  usable,
  too_idle,       // parked max_idle or longer: the server may drop it any time now
  token_too_old,  // less than min_token_life left on its token
  not_wanted,     // no client login within the window
};
std::string_view to_string(WarmVerdict verdict);

// Whether a connection stamped `stamp` can still be handed to a login at `now`, or kept parked
// (for an account whose last client login was `last_login`).
WarmVerdict judge_warm(const PrewarmPolicy& policy, const WarmStamp& stamp,
                       std::optional<PrewarmTime> last_login, PrewarmTime now);

// When a connection stamped `stamp` stops being usable (the pool retires it then, and makes a
// new one if the account is still wanted).
PrewarmTime retire_at(const PrewarmPolicy& policy, const WarmStamp& stamp,
                      std::optional<PrewarmTime> last_login);

enum class Admission {
  take_warm,  // hand the parked connection to the login
  fresh,      // log in upstream now
  refused,    // at the account's limit with nothing parked: NO [UNAVAILABLE]
};

// A client login of `account` (which has a usable parked connection when `warm_usable`). A
// parked connection is taken even at the limit: it is already counted, so taking it opens
// nothing new.
Admission admit(const PrewarmPolicy& policy, const AccountWarmth& account, bool warm_usable);

// Whether `data` (what the server sent to a parked connection) holds a complete untagged BYE
// line (RFC 9051 §7.1.5: the server is closing the connection).
bool holds_bye(std::string_view data);

}  // namespace iop::proxy
