#pragma once
// The one sanitizer for text a peer chose (client usernames and commands, upstream BYE and
// response texts, token-endpoint error texts) before it goes into a log line, an audit row or
// a terminal. Pure: no I/O, no allocation beyond the result.
//
// Rules (sanitize_for_log):
// - Printable ASCII (0x20..0x7e) is kept as it is, the backslash included: the result is then
//   idempotent (sanitizing it again changes nothing), so a value sanitized when its audit row
//   was written shows the same on the terminal. The price: a client can type the four
//   characters "\x1b" and they read like an escape; they can never become a control byte.
// - CR, LF and TAB become the two characters \r, \n and \t (visible, never a line break).
// - Every other byte below 0x20, DEL (0x7f), and each byte of an ill-formed UTF-8 sequence
//   (RFC 3629 §4: overlong, surrogate, above U+10FFFF, truncated) becomes \xNN (lowercase hex).
// - Well-formed UTF-8 above U+007F is kept, except the code points a terminal or log viewer acts
//   on: C1 controls U+0080..U+009F, U+2028/U+2029 (line/paragraph separator), the bidirectional
//   embeddings, overrides and isolates U+202A..U+202E and U+2066..U+2069 ("Trojan Source",
//   CVE-2021-42574), and U+FEFF: their bytes become \xNN each.
// - At most `max` bytes of output before the marker: a longer result is cut after the last
//   whole character or escape that fits, and "…(+N bytes)" is appended, N being the input bytes
//   not shown. So a log line holds at most max + 24 bytes of any one field.

#include <cstddef>
#include <string>
#include <string_view>

namespace iop {

// The default field cap: any real user name, account or server text fits.
inline constexpr std::size_t default_log_field_bytes = 256;

// `text` made safe for one log line, audit row or terminal cell; see the rules above. Use
// `max = std::string_view::npos` for no cap.
std::string sanitize_for_log(std::string_view text, std::size_t max = default_log_field_bytes);

// The same for text that goes back into a protocol line (an SMTP reply, RFC 5321 §4.2: printable
// US-ASCII): every byte above 0x7e becomes \xNN too, and the cut marker is "...(+N bytes)".
std::string sanitize_for_protocol(std::string_view text, std::size_t max = default_log_field_bytes);

// A user name as a client typed it, for a log line or an audit row: sanitize_for_log of it when
// it is a syntactically valid email (every account is one), otherwise only its length,
// "<not an email, N bytes>": people type passwords into the user field, and a log or audit row
// must not keep one for ever (issue #8). Idempotent: the placeholder passes through unchanged.
std::string printable_username(std::string_view typed);

}  // namespace iop
