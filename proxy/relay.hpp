#pragma once
// The relay: after login, bytes flow both ways unchanged until either side closes or the
// connection is idle too long. Two pumps and a watchdog on the session's strand (talking-async
// step 3, adapted to Boost 1.74): each pump reads, then writes everything before reading again,
// so a slow reader holds the other side back instead of making the proxy buffer.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/asio.hpp"
#include "proxy/imap_stream.hpp"

namespace iop::proxy {

struct RelayResult {
  std::uint64_t client_to_upstream = 0;
  std::uint64_t upstream_to_client = 0;
  bool idle_timeout = false;
  std::string close_reason;  // "client closed", "upstream closed", "upstream BYE: <text>", ...
};

// Relays until either side closes, an I/O error, `idle_timeout` without traffic either way, or
// stop_relay() from the session's strand. Both streams are shut down (TLS close_notify) before
// it returns. Must run on the streams' strand.
// `observe`, when set, sees every chunk before it is written on (upward: client to upstream):
// the submission side counts accepted messages with it.
using RelayObserver = std::function<void(bool upward, std::string_view bytes)>;
awaitable<RelayResult> relay(ImapStream& client, ImapStream& upstream,
                             std::chrono::milliseconds idle_timeout, RelayObserver observe = {});

}  // namespace iop::proxy
