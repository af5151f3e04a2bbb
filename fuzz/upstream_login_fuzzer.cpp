// libFuzzer target for the upstream IMAP login (proxy/upstream_login_machine.hpp; issue #9 item
// 4; STYLE.md §3.10): the server's side of the greeting, CAPABILITY, AUTHENTICATE XOAUTH2 or
// LOGIN, the failure challenge, the tagged outcome, the post-login CAPABILITY and the probe, with
// the response framing and its limits underneath.
//
// First input byte: options (bit 0: a password account (LOGIN), else a token; bit 1: the probe;
// bit 2: small limits; bit 3 with bit 1: the probe only against Exchange). Second byte: seed for
// the read sizes. The rest: the server's bytes.
//
// Checks, besides the sanitizers:
// - the same bytes cut into arbitrary reads give the same transcript as in one read: the same
//   Sends (bytes and step), the same Failed, the same Done (its pending plus the bytes fed after
//   it, which the relay would read next);
// - nothing after a Done or Failed, and at most one of them;
// - every Send is one line ended by CRLF; the secret (the XOAUTH2 initial response, or the
//   quoted password) goes out in exactly one of them at most, that one being the AUTHENTICATE or
//   LOGIN command or the response on the continuation; the token and the password never go out
//   in clear (the token travels only base64-encoded);
// - a Failed never holds the token, the password or the initial response unless the server sent
//   them itself;
// - Done's capabilities are non-empty words without spaces, and its pending is the end of the
//   input.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/sasl.hpp"
#include "fuzz/reads.hpp"
#include "fuzz/require.hpp"
#include "proxy/upstream_login_machine.hpp"

namespace {

using namespace iop::proxy;
using namespace iop::proxy::upstream_login;

using iop::fuzz::require;

constexpr std::string_view user = "alice@example.com";
// Mixed case: the machine upper-cases status words, which must not be able to make one up.
constexpr std::string_view token = "Tok3n-s3cret-4711";
constexpr std::string_view password = "Pa55-w0rd-0815";

UpstreamLoginOptions options_for(std::uint8_t flags) {
  UpstreamLoginOptions o;
  o.user = std::string(user);
  o.is_password = (flags & 1) != 0;
  o.secret = iop::Secret(o.is_password ? password : token);
  // Bit 1 off: never; on: always, or with bit 3 only against Exchange (its greeting decides).
  o.probe = (flags & 2) == 0   ? iop::proxy::Probe::never
            : (flags & 8) != 0 ? iop::proxy::Probe::exchange
                               : iop::proxy::Probe::always;
  o.where = "imap.example:993";
  if ((flags & 4) != 0) {
    o.limits.max_line_bytes = 48;
    o.limits.max_total_bytes = 512;
  }
  return o;
}

struct Transcript {
  std::string text;
  std::vector<std::string> sends;
  std::optional<Failed> failed;
  std::optional<Done> done;
  std::string after;  // bytes fed after Done
};

Transcript run(const UpstreamLoginOptions& options, const std::vector<std::string_view>& pieces) {
  UpstreamLoginMachine machine(options);
  Transcript t;
  for (const auto piece : pieces) {
    require(!machine.step().empty());
    const bool was_finished = machine.finished();
    auto actions = machine.feed(piece);
    if (was_finished) {
      require(actions.empty());
      if (t.done) {
        t.after += piece;
      }
      continue;
    }
    for (auto& action : actions) {
      require(!t.failed && !t.done);  // nothing after the end
      if (const auto* s = std::get_if<Send>(&action)) {
        require(!s->step.empty());
        t.text += "C(" + std::string(s->step) + "): " + s->bytes.reveal();
        t.sends.push_back(s->bytes.reveal());
      } else if (auto* d = std::get_if<Done>(&action)) {
        t.done = std::move(*d);
      } else if (auto* f = std::get_if<Failed>(&action)) {
        t.text += "<failed " + std::string(to_string(f->error.kind)) + " " + f->error.detail + ">";
        t.failed = std::move(*f);
      }
    }
    require(machine.finished() == (t.done || t.failed));
  }
  if (t.done) {
    t.text += "<done";
    for (const auto& cap : t.done->capabilities) {
      t.text += " " + cap;
    }
    t.text += " | " + t.done->pending + t.after + ">";
  }
  return t;
}

void check(const UpstreamLoginOptions& options, std::string_view input, const Transcript& t) {
  const iop::Secret ir = iop::auth::xoauth2_initial_response(user, iop::Secret(token));
  // What carries the secret on the wire: the initial response, or the quoted password (it has
  // no character to escape).
  const std::string on_wire =
      options.is_password ? "\"" + std::string(password) + "\"" : ir.reveal();
  std::size_t carrying = 0;
  for (const auto& s : t.sends) {
    require(s.size() >= 2 && s.find_first_of("\r\n") == s.size() - 2 && s.ends_with("\r\n"));
    require(s.find(token) == std::string::npos);
    if (s.find(password) != std::string::npos) {
      require(s.find(on_wire) != std::string::npos);
    }
    if (s.find(on_wire) == std::string::npos) {
      continue;
    }
    ++carrying;
    if (options.is_password) {
      require(s.starts_with("p") &&
              s.ends_with(" LOGIN \"alice@example.com\" " + on_wire + "\r\n"));
    } else {
      require(s == on_wire + "\r\n" ||
              (s.starts_with("p") && s.ends_with(" AUTHENTICATE XOAUTH2 " + on_wire + "\r\n")));
    }
  }
  require(carrying <= 1);
  if (t.failed) {
    const std::string& detail = t.failed->error.detail;
    for (const std::string_view secret : {token, password, std::string_view(ir.reveal())}) {
      if (input.find(secret) == std::string_view::npos) {
        require(detail.find(secret) == std::string::npos);
      }
    }
  }
  if (t.done) {
    require(carrying == 1);  // logged in, so the credentials went out, once
    for (const auto& cap : t.done->capabilities) {
      require(!cap.empty() && cap.find(' ') == std::string::npos);
    }
    require(input.ends_with(t.done->pending + t.after));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) {
    return 0;
  }
  const UpstreamLoginOptions options = options_for(data[0]);
  const std::string_view input(reinterpret_cast<const char*>(data + 2), size - 2);
  const Transcript whole = run(options, {input});
  const Transcript pieces = run(options, iop::fuzz::cut_into_reads(input, data[1]));
  check(options, input, whole);
  check(options, input, pieces);
  require(whole.text == pieces.text);
  return 0;
}
