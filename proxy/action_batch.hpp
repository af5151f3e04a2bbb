#pragma once
// The client-facing machines (IMAP PreauthMachine, SMTP ServerMachine) answer with a list of
// actions; consecutive Sends are merged so that each batch of responses is one write (one TLS
// record, one TCP segment: RFC 2920 §3.2 asks servers to send pipelined replies together).
// Pure.

#include <string>
#include <variant>
#include <vector>

namespace iop::proxy {

// Appends `bytes` to the last action when it is a `SendT`, else adds a new `SendT{bytes}`.
template <class SendT, class... Actions>
void append_send(std::vector<std::variant<Actions...>>& out, std::string bytes) {
  if (!out.empty()) {
    if (auto* last = std::get_if<SendT>(&out.back())) {
      last->bytes += bytes;
      return;
    }
  }
  out.emplace_back(std::in_place_type<SendT>, std::move(bytes));
}

}  // namespace iop::proxy
