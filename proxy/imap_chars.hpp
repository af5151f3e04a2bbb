#pragma once
// The IMAP grammar's character classes (RFC 9051 §9, unchanged from RFC 3501 §9), named as the
// ABNF names them. The lexer (what a client may send) and the response builders (what the proxy
// writes) both use these, so the two cannot disagree about what an atom or a tag is. Pure,
// constexpr; bytes are taken as unsigned char.

#include <string_view>

namespace iop::proxy::imap {

// RFC 5234 B.1: CHAR = %x01-7F; CTL = %x00-1F / %x7F.
constexpr bool is_char(unsigned char c) noexcept { return c >= 0x01 && c <= 0x7f; }
constexpr bool is_ctl(unsigned char c) noexcept { return c <= 0x1f || c == 0x7f; }

// list-wildcards = "%" / "*"
constexpr bool is_list_wildcard(unsigned char c) noexcept { return c == '%' || c == '*'; }

// quoted-specials = DQUOTE / "\" (escaped with "\" inside a quoted string, §4.3)
constexpr bool is_quoted_special(unsigned char c) noexcept { return c == '"' || c == '\\'; }

// resp-specials = "]"
constexpr bool is_resp_special(unsigned char c) noexcept { return c == ']'; }

// atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
constexpr bool is_atom_special(unsigned char c) noexcept {
  return c == '(' || c == ')' || c == '{' || c == ' ' || is_ctl(c) || is_list_wildcard(c) ||
         is_quoted_special(c) || is_resp_special(c);
}

// ATOM-CHAR = <any CHAR except atom-specials>
constexpr bool is_atom_char(unsigned char c) noexcept { return is_char(c) && !is_atom_special(c); }

// ASTRING-CHAR = ATOM-CHAR / resp-specials
constexpr bool is_astring_char(unsigned char c) noexcept {
  return is_atom_char(c) || is_resp_special(c);
}

// tag = 1*<any ASTRING-CHAR except "+">
constexpr bool is_tag_char(unsigned char c) noexcept { return is_astring_char(c) && c != '+'; }

namespace detail {
template <bool (*Pred)(unsigned char) noexcept>
constexpr bool all_of_nonempty(std::string_view s) noexcept {
  if (s.empty()) {
    return false;
  }
  for (const char c : s) {
    if (!Pred(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}
}  // namespace detail

// atom = 1*ATOM-CHAR (a capability is an atom, or "AUTH=" atom, which is an atom too)
constexpr bool is_atom(std::string_view s) noexcept {
  return detail::all_of_nonempty<is_atom_char>(s);
}

// tag = 1*<any ASTRING-CHAR except "+">
constexpr bool is_tag(std::string_view s) noexcept {
  return detail::all_of_nonempty<is_tag_char>(s);
}

}  // namespace iop::proxy::imap
