#pragma once
// One IMAP command line as the pre-auth lexer delivers it: tag, command name and arguments
// (RFC 9051 §2.2.1, §9 `command`). Every argument is kept as a Secret because before login the
// arguments are passwords and SASL payloads often enough that treating them all alike is safest.

#include <string>
#include <vector>

#include "common/secret.hpp"

namespace iop::proxy {

// How an argument was written. Lists are flattened: `(a b)` is list_begin, a, b, list_end.
enum class ArgKind {
  atom,        // a bare token (RFC 9051 §4.1 atom, or the astring extension with "]")
  quoted,      // a quoted string, escapes removed (§4.3)
  literal,     // a literal `{n}` or a non-synchronizing literal `{n+}` (§4.3, RFC 7888)
  list_begin,  // "(" (§4.4)
  list_end,    // ")"
};

// One argument. `value` is empty for list_begin and list_end.
struct Argument {
  ArgKind kind = ArgKind::atom;
  Secret value;

  // True for an atom, a quoted string or a literal: what the grammar calls an astring.
  [[nodiscard]] bool is_string() const;
  // True for the atom NIL in any case (RFC 9051 §4.5); a quoted "NIL" is a string, not NIL.
  [[nodiscard]] bool is_nil() const;
};

// A complete command line. `name` is upper-cased (command names are case-insensitive, RFC 9051
// §9 note 1); `tag` is kept as sent.
struct Command {
  std::string tag;
  std::string name;
  std::vector<Argument> args;

  // A one-line description safe for logs: the tag and name, the user name of LOGIN and the
  // mechanism of AUTHENTICATE; every other argument shows as [redacted]. Fields go through
  // sanitize_for_log() (common/sanitize.hpp) cut at 64 bytes, so a client cannot forge log
  // lines. Examples:
  // `a1 LOGIN alice@example.com [redacted]`, `a2 AUTHENTICATE PLAIN [redacted]`.
  [[nodiscard]] std::string log_summary() const;
};

}  // namespace iop::proxy
