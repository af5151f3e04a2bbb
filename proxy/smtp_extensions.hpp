#pragma once
// SMTP service extensions (RFC 5321 §4.1.1.1 EHLO): reading the upstream's, and choosing what
// the submission listener advertises to its own clients. Pure.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp_reply.hpp"

namespace iop::proxy::smtp {

struct Extension {
  std::string keyword;  // upper case ("SIZE", "8BITMIME", "AUTH")
  std::string params;   // what followed the keyword ("35882577", "LOGIN XOAUTH2"); may be empty

  friend bool operator==(const Extension&, const Extension&) = default;
};

// The extensions of a 250 EHLO reply: every line after the first (which greets). Lines that do
// not start with an ehlo-keyword (ALPHA / DIGIT, then ALPHA / DIGIT / "-") are skipped.
std::vector<Extension> parse_ehlo_reply(const Reply& reply);

// The extension named `keyword` (case-insensitive), if advertised.
const Extension* find_extension(const std::vector<Extension>& extensions, std::string_view keyword);

// Whether "AUTH" lists SASL mechanism `mechanism` (case-insensitive). Also reads the pre-RFC
// "AUTH=LOGIN PLAIN" form some servers still send.
bool offers_sasl_mechanism(const std::vector<Extension>& extensions, std::string_view mechanism);

// What the listener advertises after its greeting line, given the upstream's extensions: those
// the relayed session can honour unchanged (an allow-list: SIZE, PIPELINING, 8BITMIME,
// BINARYMIME, CHUNKING, SMTPUTF8, DSN, ENHANCEDSTATUSCODES, DELIVERBY, MT-PRIORITY), never the
// upstream's AUTH, STARTTLS or administrative ones (XCLIENT, XFORWARD, ETRN, BURL...), then
// STARTTLS when `offer_starttls`, then "AUTH PLAIN LOGIN" when `offer_auth`. Pre-authentication
// replies of the listener carry enhanced status codes, so ENHANCEDSTATUSCODES is always there.
std::vector<std::string> advertised_extensions(const std::vector<Extension>& upstream,
                                               bool offer_starttls, bool offer_auth);

// What every one of several upstreams offers, for a listener that cannot know before AUTH which
// of them a client will reach: the extensions all of them advertise with the same parameters,
// and SIZE with the smallest limit (a limit of 0, RFC 1870's "no fixed maximum", counts as
// none). Empty input: empty. Order: the first upstream's.
std::vector<Extension> common_extensions(const std::vector<std::vector<Extension>>& upstreams);

// What the listener assumes of an upstream it has not seen yet (the first EHLO before any
// upstream was reached): what every major submission service offers.
std::vector<Extension> baseline_extensions();

}  // namespace iop::proxy::smtp
