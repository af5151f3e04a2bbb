#pragma once
// "host:port" as written in the config (listen addresses) and on the command line (--upstream).
// Pure.

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace iop {

struct HostPort {
  std::string host;  // an IPv6 address without its brackets
  int port = 0;
};

// "host:port", "[ipv6]:port" (RFC 3986 §3.2.2 IP-literal), or an unbracketed IPv6 address whose
// last ":" starts the port ("::1:993"). The host must be non-empty; the port is decimal digits
// only, 1..65535. Errc::config_error naming the expected form otherwise.
Result<HostPort> parse_host_port(std::string_view text);

}  // namespace iop
