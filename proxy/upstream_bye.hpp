#pragma once
// An upstream server's `* BYE` (RFC 9051 §7.1.5) as the reason a relayed session ended: Exchange
// ends sessions whose token expired with "* BYE Session invalidated - AccessTokenExpired". Pure:
// the relay (proxy/relay.cpp) feeds it the end of what the server sent.

#include <optional>
#include <string>
#include <string_view>

namespace iop::proxy {

// The text of the last complete "* BYE" line in `data` (one that starts a line), sanitized for
// a log line and an audit row, if there is one.
std::optional<std::string> find_bye(std::string_view data);

// The text of a BYE that is the last thing `tail` says, if any: the BYE line ends `tail`, or is
// followed by nothing but one tagged line (the completion of a LOGOUT). A "* BYE" inside a
// message body is followed by more data and does not count; neither does anything when `tail`
// ends mid-line.
std::optional<std::string> last_bye(std::string_view tail);

}  // namespace iop::proxy
