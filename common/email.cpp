#include "common/email.hpp"

#include <algorithm>

#include "common/ascii.hpp"

namespace iop {
namespace {

bool allowed_local_char(char c) {
  if (is_ascii_alnum(c)) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~.").find(c) != std::string_view::npos;
}

bool allowed_domain_char(char c) { return is_ascii_alnum(c) || c == '-' || c == '.'; }

}  // namespace

Result<std::string> normalize_email(std::string_view text) {
  auto bad = [](std::string_view why) {
    return fail(Errc::invalid_argument, fmt::format("not an email address: {}", why));
  };
  if (text.empty()) {
    return bad("empty");
  }
  if (text.size() > 254) {
    return bad("longer than 254 characters");
  }
  const auto at = text.rfind('@');
  if (at == std::string_view::npos) {
    return bad("no '@'");
  }
  const auto local = text.substr(0, at);
  const auto domain = text.substr(at + 1);
  if (local.empty() || local.size() > 64) {
    return bad("the part before '@' must have 1 to 64 characters");
  }
  if (!std::all_of(local.begin(), local.end(), allowed_local_char)) {
    return bad("the part before '@' holds a character that is not allowed");
  }
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) {
    return bad("misplaced '.' before '@'");
  }
  if (domain.empty() || domain.find('.') == std::string_view::npos) {
    return bad("the domain needs at least one '.'");
  }
  if (!std::all_of(domain.begin(), domain.end(), allowed_domain_char)) {
    return bad("the domain holds a character that is not allowed");
  }
  if (domain.front() == '.' || domain.back() == '.' ||
      domain.find("..") != std::string_view::npos || domain.front() == '-') {
    return bad("misplaced '.' or '-' in the domain");
  }
  return ascii_lowered(text);
}

}  // namespace iop
