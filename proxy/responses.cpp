#include "proxy/responses.hpp"

#include "proxy/imap_chars.hpp"

namespace iop::proxy {
namespace {

// A response code may hold spaces ("CAPABILITY a b") but no control byte and no "]".
std::string sanitize_code(std::string_view code) {
  std::string out;
  for (const char ch : code) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != ']' && c != '[') {
      out += ch;
    }
  }
  while (!out.empty() && out.back() == ' ') {
    out.pop_back();
  }
  return out;
}

std::string_view status_word(Status status) {
  switch (status) {
    case Status::ok:
      return "OK";
    case Status::no:
      return "NO";
    case Status::bad:
      return "BAD";
  }
  return "BAD";
}

// "<prefix> <status> [<code>] <text>\r\n".
std::string status_line(std::string_view prefix, std::string_view status, std::string_view text,
                        std::string_view code) {
  std::string out(prefix);
  out += ' ';
  out += status;
  out += ' ';
  const std::string clean_code = sanitize_code(code);
  std::string clean_text = sanitize_text(text);
  if (!clean_code.empty()) {
    out += '[';
    out += clean_code;
    out += "] ";
  } else if (clean_text.front() == '[') {
    // Text starting with "[" would be read as a response code.
    clean_text.front() = '(';
  }
  out += clean_text;
  out += "\r\n";
  return out;
}

}  // namespace

std::string sanitize_text(std::string_view text) {
  std::string out;
  const std::size_t n = text.size() < max_response_text ? text.size() : max_response_text;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    out += (c < 0x20 || c == 0x7f) ? ' ' : text[i];
  }
  if (out.find_first_not_of(' ') == std::string::npos) {
    return "completed";
  }
  return out;
}

std::string tagged(std::string_view tag, Status status, std::string_view text,
                   std::string_view code) {
  return status_line(imap::is_tag(tag) ? tag : "*", status_word(status), text, code);
}

std::string tagged_ok(std::string_view tag, std::string_view text, std::string_view code) {
  return tagged(tag, Status::ok, text, code);
}

std::string tagged_no(std::string_view tag, std::string_view text, std::string_view code) {
  return tagged(tag, Status::no, text, code);
}

std::string tagged_bad(std::string_view tag, std::string_view text, std::string_view code) {
  return tagged(tag, Status::bad, text, code);
}

std::string untagged_bad(std::string_view text) { return status_line("*", "BAD", text, {}); }

std::string bye(std::string_view text) { return status_line("*", "BYE", text, {}); }

std::string continuation(std::string_view text) {
  std::string out = "+ ";
  if (!text.empty()) {
    out += sanitize_text(text);
  }
  out += "\r\n";
  return out;
}

std::string capability_code(const std::vector<std::string>& capabilities) {
  std::string out = "CAPABILITY";
  for (const auto& cap : capabilities) {
    // RFC 9051 §9: capability = ("AUTH=" auth-type) / atom; anything else is dropped.
    if (imap::is_atom(cap)) {
      out += ' ';
      out += cap;
    }
  }
  return out;
}

std::string capability_line(const std::vector<std::string>& capabilities) {
  return "* " + capability_code(capabilities) + "\r\n";
}

std::string greeting(const std::vector<std::string>& capabilities) {
  return "* OK [" + capability_code(capabilities) + "] imap-oauth2-proxy ready\r\n";
}

std::string id_line() { return "* ID (\"name\" \"imap-oauth2-proxy\")\r\n"; }

}  // namespace iop::proxy
