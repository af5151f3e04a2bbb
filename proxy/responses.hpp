#pragma once
// Builders for the server responses the proxy itself sends before login (RFC 9051 §7). Every
// piece of text that may come from elsewhere (a tag, an upstream message, a capability) is
// sanitized: no CR, LF or other control byte ever reaches the client, so one response is always
// exactly one line ending in CRLF.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace iop::proxy {

// Status of a tagged response (RFC 9051 §7.1).
enum class Status { ok, no, bad };

// Longest text kept in a response; the rest is cut.
inline constexpr std::size_t max_response_text = 512;

// `text` with control bytes (CR, LF, NUL, ...) turned into spaces, cut to max_response_text.
// An empty result becomes "completed" (RFC 3501 requires text after the status).
std::string sanitize_text(std::string_view text);

// "<tag> OK|NO|BAD [<code>] <text>\r\n" (RFC 9051 §7.1). `code` is a response code such as
// "AUTHENTICATIONFAILED", "UNAVAILABLE", "PRIVACYREQUIRED" (RFC 5530) or "CAPABILITY ...", empty
// for none. A tag that is empty or not a valid tag gives an untagged "* ..." response.
std::string tagged(std::string_view tag, Status status, std::string_view text,
                   std::string_view code = {});
std::string tagged_ok(std::string_view tag, std::string_view text, std::string_view code = {});
std::string tagged_no(std::string_view tag, std::string_view text, std::string_view code = {});
std::string tagged_bad(std::string_view tag, std::string_view text, std::string_view code = {});

// "* BAD <text>\r\n": an error not tied to a command whose tag is known (RFC 9051 §7.1.3).
std::string untagged_bad(std::string_view text);

// "* BYE <text>\r\n": the server is closing the connection (RFC 9051 §7.1.5).
std::string bye(std::string_view text);

// "+ <text>\r\n", or "+ \r\n" for empty text: a command continuation request (RFC 9051 §7.5).
std::string continuation(std::string_view text = {});

// "CAPABILITY <cap> <cap>...": the response code for a greeting or a tagged OK. Capabilities that
// are not atoms are dropped.
std::string capability_code(const std::vector<std::string>& capabilities);

// "* CAPABILITY <cap>...\r\n" (RFC 9051 §7.2.2).
std::string capability_line(const std::vector<std::string>& capabilities);

// "* OK [CAPABILITY ...] imap-oauth2-proxy ready\r\n" (RFC 9051 §7.1.1).
std::string greeting(const std::vector<std::string>& capabilities);

// "* ID ("name" "imap-oauth2-proxy")\r\n" (RFC 2971 §3.2).
std::string id_line();

}  // namespace iop::proxy
