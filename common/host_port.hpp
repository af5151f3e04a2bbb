#pragma once
// Host and port: "host:port" as written in the config (listen addresses) and on the command line
// (--upstream), the authority of a URL (RFC 3986 §3.2), and the one way a host and a port are
// shown in messages. Pure.

#include <optional>
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

// The host and port of a URL's authority (RFC 3986 §3.2.2-3.2.3).
struct Authority {
  std::string host;         // as written (case kept), an IP-literal without its brackets
  std::optional<int> port;  // absent when the authority has no ":port"
  bool bracketed = false;   // the host was an IP-literal, "[...]"
};

// Parses `authority`: the text after "scheme://" and any "userinfo@", up to (not including) the
// path, query or fragment; the caller splits those off, because what may precede and follow
// differs between URL kinds. Forms: "host", "host:port", "[ip-literal]", "[ip-literal]:port".
// An unbracketed host ends at the first ':'. The port is decimal digits only, 1..65535; ':' with
// no port after it is refused (none of our URLs has a use for RFC 3986's empty port). Host
// characters are not checked here: what a caller accepts differs. Errc::invalid_argument, with
// one of these messages (a caller may prefix its own context):
//   "IPv6 address is missing its closing ']'"
//   "unexpected text after the IPv6 address"
//   "the host is missing"
//   "the port must be a number from 1 to 65535"
Result<Authority> parse_authority(std::string_view authority);

// "host:port", or "[host]:port" when the host holds a ':' (an IPv6 address, RFC 3986 §3.2.2),
// so that the port stays readable. For messages, log lines and names only; the host is not
// checked or escaped.
std::string format_host_port(std::string_view host, int port);

}  // namespace iop
