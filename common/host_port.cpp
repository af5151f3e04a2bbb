#include "common/host_port.hpp"

#include <charconv>

namespace iop {

Result<HostPort> parse_host_port(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {  // [::1]:1993
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail(Errc::config_error, "expected \"[ipv6]:port\"");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(Errc::config_error, "expected \"host:port\"");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  int value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (host.empty() || ec != std::errc{} || end != port.data() + port.size() || value < 1 ||
      value > 65535) {
    return fail(Errc::config_error, "expected \"host:port\" with a port from 1 to 65535");
  }
  return HostPort{std::string(host), value};
}

}  // namespace iop
