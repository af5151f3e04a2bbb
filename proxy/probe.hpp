#pragma once
// When an upstream IMAP login ends with the `LIST "" ""` probe ([upstream] probe). Pure.

#include <string_view>

#include "common/ascii.hpp"

namespace iop::proxy {

enum class Probe {
  never,
  always,
  // [upstream] probe = "auto", the default: only against Microsoft Exchange, the one server
  // known to accept a login and then refuse the session ("User is authenticated but not
  // connected"); anywhere else the probe is a round trip every login pays for nothing. Exchange
  // is recognised by its host (resolve_probe) or by a greeting that names it
  // (UpstreamLoginMachine). Exchange behind another name with a custom banner is not: there,
  // set probe = true.
  exchange,
};

// `probe` for a login to `host`: `exchange` becomes `always` for Microsoft's IMAP hosts, so the
// probe does not depend on the wording of their greeting alone: outlook.office365.com and the
// other names under office365.com, outlook.com and office.com, and the national clouds'
// office365.us (US Government) and outlook.cn (21Vianet). A trailing dot is ignored.
constexpr Probe resolve_probe(Probe probe, std::string_view host) {
  if (probe != Probe::exchange) {
    return probe;
  }
  if (host.ends_with('.')) {
    host.remove_suffix(1);
  }
  for (const std::string_view domain :
       {"office365.com", "outlook.com", "office.com", "office365.us", "outlook.cn"}) {
    if (ascii_iequals(host, domain) ||
        (host.size() > domain.size() && ascii_iends_with(host, domain) &&
         host[host.size() - domain.size() - 1] == '.')) {
      return Probe::always;
    }
  }
  return probe;
}

}  // namespace iop::proxy
