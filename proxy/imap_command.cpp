#include "proxy/imap_command.hpp"

#include <cstddef>
#include <string_view>

#include "common/sanitize.hpp"

namespace iop::proxy {
namespace {

// Log fields longer than this are cut: enough for any real user name or tag.
constexpr std::size_t max_log_field = 64;

// Through the project's one log sanitizer, so a CR, LF or escape sequence from the client never
// reaches a log line.
void append_printable(std::string& out, std::string_view field) {
  out += sanitize_for_log(field, max_log_field);
}

}  // namespace

bool Argument::is_string() const {
  return kind == ArgKind::atom || kind == ArgKind::quoted || kind == ArgKind::literal;
}

bool Argument::is_nil() const {
  if (kind != ArgKind::atom) {
    return false;
  }
  const std::string& v = value.reveal();
  return v.size() == 3 && (v[0] == 'N' || v[0] == 'n') && (v[1] == 'I' || v[1] == 'i') &&
         (v[2] == 'L' || v[2] == 'l');
}

std::string Command::log_summary() const {
  std::string out;
  append_printable(out, tag);
  out += ' ';
  append_printable(out, name);
  std::size_t shown = 0;
  // The user name of LOGIN and the mechanism of AUTHENTICATE help operators; neither is secret.
  if ((name == "LOGIN" || name == "AUTHENTICATE") && !args.empty() && args[0].is_string()) {
    out += ' ';
    if (args[0].value.empty()) {
      out += "\"\"";
    } else {
      append_printable(out, args[0].value.reveal());
    }
    shown = 1;
  }
  if (args.size() > shown) {
    out += " [redacted]";
  }
  return out;
}

}  // namespace iop::proxy
