#pragma once
// Microsoft identity platform error codes (AADSTS...) mapped to what an operator should do.
// Pure: no I/O.

#include <optional>
#include <string>
#include <string_view>

namespace iop::auth {

// What a known code means. `permanent` and `config` are never both true; an entry with neither
// is a temporary condition at Microsoft's side: retry later.
struct AadstsInfo {
  int code = 0;
  bool permanent = false;        // true: the refresh token will never work again: re-authorize
  bool config = false;           // true: our client settings are wrong: the operator must fix them
  std::string_view explanation;  // operator-facing, one sentence, no secrets
};

// The entry for `code`, or nullopt for codes we do not know.
std::optional<AadstsInfo> lookup_aadsts(int code);

// `text` (an explanation from this table or the token-response classifier) with the command it
// names made concrete: "'imap-oauth2-proxy account reauth EMAIL'" becomes
// "'imap-oauth2-proxy account <command> <email>'". For a new account, pass command "add".
std::string name_account(std::string_view text, std::string_view email,
                         std::string_view command = "reauth");

// The first "AADSTS<digits>" in an error_description, or 0.
int extract_aadsts(std::string_view description);

}  // namespace iop::auth
