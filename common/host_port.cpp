#include "common/host_port.hpp"

#include <fmt/format.h>

#include <charconv>

#include "common/ascii.hpp"

namespace iop {

namespace {

// A TCP port: decimal digits only (no sign, no space), 1..65535.
std::optional<int> parse_port(std::string_view text) {
  int value = 0;
  if (!all_ascii_digits(text)) {
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < 1 || value > 65535) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

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
  const auto value = parse_port(port);
  if (host.empty() || !value) {
    return fail(Errc::config_error, "expected \"host:port\" with a port from 1 to 65535");
  }
  return HostPort{std::string(host), *value};
}

Result<Authority> parse_authority(std::string_view authority) {
  Authority out;
  std::string_view host;
  std::string_view rest;  // "" or ":port"
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return fail(Errc::invalid_argument, "IPv6 address is missing its closing ']'");
    }
    host = authority.substr(1, close - 1);
    rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') {
      return fail(Errc::invalid_argument, "unexpected text after the IPv6 address");
    }
    out.bracketed = true;
  } else {
    const auto colon = authority.find(':');
    host = authority.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{} : authority.substr(colon);
  }
  if (host.empty()) {
    return fail(Errc::invalid_argument, "the host is missing");
  }
  if (!rest.empty()) {
    out.port = parse_port(rest.substr(1));
    if (!out.port) {
      return fail(Errc::invalid_argument, "the port must be a number from 1 to 65535");
    }
  }
  out.host = std::string(host);
  return out;
}

std::string format_host_port(std::string_view host, int port) {
  if (host.find(':') != std::string_view::npos) {
    return fmt::format("[{}]:{}", host, port);
  }
  return fmt::format("{}:{}", host, port);
}

}  // namespace iop
