// libFuzzer target for the pre-auth IMAP core (STYLE.md §3.10): arbitrary bytes, cut into
// arbitrary reads, go into a PreauthMachine; each CheckCredentials is answered with the next of a
// cycle of outcomes and each StartTls with on_tls_started(). Besides the sanitizers, it checks:
// - every Send is whole lines, each ending in CRLF, with no other CR or LF (no response injection);
// - nothing follows Close or Authenticated, and feed() afterwards returns nothing;
// - the same bytes fed in one piece give the same actions up to the first StartTls or
//   Authenticated (after those, what was buffered legitimately depends on the read boundaries).
//
// First input byte: options (bit 0 TLS active, bit 1 plaintext login allowed, bit 2 STARTTLS
// offered, bit 3 small limits). Second byte: seed for the read sizes. The rest: client bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz/reads.hpp"
#include "fuzz/require.hpp"
#include "proxy/preauth_machine.hpp"

namespace {

using namespace iop::proxy;

using iop::fuzz::require;

void check_lines(const std::string& bytes) {
  require(bytes.size() >= 2);
  require(bytes.compare(bytes.size() - 2, 2, "\r\n") == 0);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] == '\r') {
      require(i + 1 < bytes.size() && bytes[i + 1] == '\n');
    } else if (bytes[i] == '\n') {
      require(i > 0 && bytes[i - 1] == '\r');
    }
  }
}

LoginOutcome outcome_for(std::size_t n) {
  switch (n % 5) {
    case 0:
      return LoginOutcome::failed(LoginFailure::auth_failed);
    case 1:
      return LoginOutcome::failed(LoginFailure::upstream_unavailable, "down\r\nx OK fake");
    case 2:
      return LoginOutcome::failed(LoginFailure::needs_reauth, "run 'account add'");
    case 3:
      return LoginOutcome::failed(LoginFailure::other);
    default:
      return LoginOutcome::success({"IMAP4rev1", "IDLE", "bad cap\r\n"});
  }
}

struct Driver {
  explicit Driver(const PreauthOptions& options) : machine(options) { handle(machine.start()); }

  void feed(std::string_view bytes) {
    auto actions = machine.feed(bytes);
    if (finished) {
      require(actions.empty());
    }
    handle(std::move(actions));
  }

  void handle(std::vector<Action> actions) {
    while (!actions.empty()) {
      require(!finished);
      for (std::size_t i = 0; i < actions.size(); ++i) {
        const Action& action = actions[i];
        const bool last = i + 1 == actions.size();
        if (const auto* send = std::get_if<Send>(&action)) {
          check_lines(send->bytes);
          transcript += send->bytes;
        } else if (std::holds_alternative<StartTls>(action)) {
          require(last);
          transcript += "<StartTls>\n";
          diverged = true;
        } else if (const auto* check = std::get_if<CheckCredentials>(&action)) {
          require(last);
          transcript += "<Check " + check->tag + " " + check->username + ">\n";
        } else if (std::holds_alternative<Authenticated>(action)) {
          require(last);
          transcript += "<Authenticated>\n";
          finished = true;
          diverged = true;
        } else if (std::holds_alternative<Close>(action)) {
          require(last);
          transcript += "<Close>\n";
          finished = true;
        }
        if (!diverged) {
          stable = transcript;
        }
      }
      const Action last = std::move(actions.back());
      actions.clear();
      if (std::holds_alternative<CheckCredentials>(last)) {
        require(machine.state() == PreauthMachine::State::awaiting_credentials);
        actions = machine.on_login_result(outcome_for(logins++));
      } else if (std::holds_alternative<StartTls>(last)) {
        require(machine.state() == PreauthMachine::State::awaiting_tls);
        actions = machine.on_tls_started();
        require(actions.empty());
      }
    }
  }

  PreauthMachine machine;
  std::string transcript;
  std::string stable;  // the transcript up to the first StartTls or Authenticated
  std::size_t logins = 0;
  bool finished = false;
  bool diverged = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) {
    return 0;
  }
  PreauthOptions options;
  options.tls_active = (data[0] & 1) != 0;
  options.allow_plaintext_login = (data[0] & 2) != 0;
  options.starttls_available = (data[0] & 4) != 0;
  if ((data[0] & 8) != 0) {
    options.limits.max_line_bytes = 64;
    options.limits.max_literal_bytes = 32;
    options.limits.max_arguments = 4;
    options.limits.max_list_depth = 2;
    options.max_commands = 8;
    options.max_errors = 3;
  }
  const std::string_view input(reinterpret_cast<const char*>(data + 2), size - 2);

  Driver chunked(options);
  for (const auto piece : iop::fuzz::cut_into_reads(input, data[1])) {
    chunked.feed(piece);
  }
  Driver whole(options);
  whole.feed(input);
  require(chunked.stable == whole.stable);
  return 0;
}
