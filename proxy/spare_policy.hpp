#pragma once
// The decisions of the spare pool (proxy/spare_pool.hpp), pure: time is a parameter, nothing
// here touches a socket, a clock or a lock.
//
// A spare is one upstream connection opened ahead of need: TCP connected, TLS handshake done,
// server certificate verified, not logged in. The next login to that server skips the connect,
// the handshake and the greeting (on Exchange Online those are two or three round trips over
// the internet; on loopback Dovecot, about 3 ms of the 4 ms the proxy added to a login) and
// starts with AUTHENTICATE. It holds no credential: any account's login can take it.

#include <chrono>
#include <optional>

namespace iop::proxy {

using SpareClock = std::chrono::steady_clock;
using SpareTime = SpareClock::time_point;

struct SparePolicy {
  // [upstream] preconnect.
  bool enabled = true;
  // A spare is kept only for a server with a login this recent: an idle proxy opens nothing.
  std::chrono::milliseconds window{std::chrono::minutes(10)};
  // How long a spare waits for a login before it is closed (and replaced while the server is
  // still wanted). No RFC sets how long a server keeps a connection that has not logged in;
  // servers close them after tens of seconds to minutes. A spare the server closes first is
  // noticed (its watcher sees the close or BYE) and not replaced before the next login.
  std::chrono::milliseconds max_idle{std::chrono::seconds(20)};
};

// What the pool knows about one upstream server.
struct SpareState {
  std::optional<SpareTime> last_login;  // the last login that asked for a spare
  bool parked = false;                  // a spare is waiting
  bool making = false;                  // one is being opened
  // The last spare could not be opened, or the server closed it: none is opened again before
  // the next login (a server that refuses or drops them costs one attempt per login, no loop).
  bool failed = false;
};

// A login to this server starts at `now`.
void note_login(SpareState& state, SpareTime now);

// Whether to start opening a spare now.
bool should_open_spare(const SparePolicy& policy, const SpareState& state, SpareTime now);

// Whether a spare opened at `created` may still be handed to a login at `now`.
bool spare_usable(const SparePolicy& policy, SpareTime created, SpareTime now);

}  // namespace iop::proxy
