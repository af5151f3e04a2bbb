#pragma once
// A command line cut where the client must wait for the server's go-ahead: after each
// synchronizing literal's length `{N}\r\n` (RFC 9051 §4.3, §7.5: the server answers "+" before
// the client sends the N bytes). Non-synchronizing literals `{N+}` (RFC 7888) are sent at once.
// Pure.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iop::client {

// `command` is one whole command with its tag and final CRLF. Returns the parts to send, in
// order, the client waiting for a continuation after every part but the last; nullopt with
// `error` set when the command has a CRLF outside a literal (two commands in one), does not end
// with CRLF, or announces a literal longer than what follows.
std::optional<std::vector<std::string_view>> split_at_literals(std::string_view command,
                                                               std::string& error);

}  // namespace iop::client
