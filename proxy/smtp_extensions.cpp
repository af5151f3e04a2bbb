#include "proxy/smtp_extensions.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>

#include "common/ascii.hpp"

namespace iop::proxy::smtp {
namespace {

// Extensions whose meaning does not change when the proxy sits between client and server: the
// relayed commands reach the upstream unchanged. RFC 1870 SIZE, RFC 2920 PIPELINING, RFC 6152
// 8BITMIME, RFC 3030 CHUNKING and BINARYMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN, RFC 2034
// ENHANCEDSTATUSCODES, RFC 2852 DELIVERBY, RFC 6710 MT-PRIORITY.
constexpr std::array<std::string_view, 9> relayable = {
    "SIZE",     "PIPELINING", "8BITMIME",  "BINARYMIME",  "CHUNKING",
    "SMTPUTF8", "DSN",        "DELIVERBY", "MT-PRIORITY",
};

}  // namespace

std::vector<Extension> parse_ehlo_reply(const Reply& reply) {
  std::vector<Extension> out;
  for (std::size_t i = 1; i < reply.lines.size(); ++i) {
    std::string_view line = reply.lines[i];
    const auto space = line.find_first_of(" =");
    const std::string_view keyword = line.substr(0, space);
    if (keyword.empty() || !is_ascii_alnum(keyword.front()) ||
        !std::all_of(keyword.begin(), keyword.end(),
                     [](char c) { return is_ascii_alnum(c) || c == '-'; })) {
      continue;
    }
    Extension ext;
    ext.keyword = ascii_uppered(keyword);
    if (space != std::string_view::npos) {
      ext.params = std::string(line.substr(space + 1));
    }
    out.push_back(std::move(ext));
  }
  return out;
}

const Extension* find_extension(const std::vector<Extension>& extensions,
                                std::string_view keyword) {
  for (const auto& ext : extensions) {
    if (ascii_iequals(ext.keyword, keyword)) {
      return &ext;
    }
  }
  return nullptr;
}

bool offers_sasl_mechanism(const std::vector<Extension>& extensions, std::string_view mechanism) {
  for (const auto& ext : extensions) {
    if (!ascii_iequals(ext.keyword, "AUTH")) {
      continue;
    }
    std::string_view params = ext.params;
    while (!params.empty()) {
      const auto space = params.find(' ');
      if (ascii_iequals(params.substr(0, space), mechanism)) {
        return true;
      }
      params = space == std::string_view::npos ? std::string_view{} : params.substr(space + 1);
    }
  }
  return false;
}

std::vector<std::string> advertised_extensions(const std::vector<Extension>& upstream,
                                               bool offer_starttls, bool offer_auth) {
  std::vector<std::string> out;
  for (const auto name : relayable) {
    if (const auto* ext = find_extension(upstream, name)) {
      // SIZE alone (no limit) is valid too (RFC 1870 §4); a limit is passed on as it is.
      out.push_back(ext->params.empty() ? std::string(name)
                                        : std::string(name) + " " + ext->params);
    }
  }
  out.emplace_back("ENHANCEDSTATUSCODES");
  if (offer_starttls) {
    out.emplace_back("STARTTLS");
  }
  if (offer_auth) {
    out.emplace_back("AUTH PLAIN LOGIN");
  }
  return out;
}

std::vector<Extension> common_extensions(const std::vector<std::vector<Extension>>& upstreams) {
  std::vector<Extension> out;
  if (upstreams.empty()) {
    return out;
  }
  for (const Extension& candidate : upstreams.front()) {
    const bool size = ascii_iequals(candidate.keyword, "SIZE");
    std::uint64_t smallest = 0;  // 0: no fixed maximum seen yet
    bool everywhere = true;
    for (const auto& extensions : upstreams) {
      const Extension* found = find_extension(extensions, candidate.keyword);
      if (found == nullptr || (!size && found->params != candidate.params)) {
        everywhere = false;
        break;
      }
      std::uint64_t limit = 0;
      if (size &&
          std::from_chars(found->params.data(), found->params.data() + found->params.size(), limit)
                  .ec == std::errc{} &&
          limit > 0 && (smallest == 0 || limit < smallest)) {
        smallest = limit;
      }
    }
    if (everywhere) {
      out.push_back(size
                        ? Extension{candidate.keyword, smallest > 0 ? std::to_string(smallest) : ""}
                        : candidate);
    }
  }
  return out;
}

std::vector<Extension> baseline_extensions() {
  return {{"PIPELINING", ""}, {"8BITMIME", ""}, {"ENHANCEDSTATUSCODES", ""}};
}

}  // namespace iop::proxy::smtp
