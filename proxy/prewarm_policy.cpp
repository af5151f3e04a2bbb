#include "proxy/prewarm_policy.hpp"

#include <algorithm>

#include "common/ascii.hpp"

namespace iop::proxy {

int counted_connections(const AccountWarmth& account) {
  return account.in_use + (account.warm ? 1 : 0) + (account.warming ? 1 : 0);
}

namespace {

bool within_window(const PrewarmPolicy& policy, std::optional<PrewarmTime> last_login,
                   PrewarmTime now) {
  return last_login && now - *last_login < policy.window;
}

}  // namespace

bool should_warm(const PrewarmPolicy& policy, const AccountWarmth& account, PrewarmTime now) {
  if (!policy.enabled || account.warm || account.warming) {
    return false;
  }
  if (!within_window(policy, account.last_login, now)) {
    return false;
  }
  if (account.last_failure && now - *account.last_failure < policy.retry_after) {
    return false;
  }
  return policy.max_per_account <= 0 || counted_connections(account) < policy.max_per_account;
}

bool token_worth_warming(const PrewarmPolicy& policy, std::optional<PrewarmTime> token_expires,
                         PrewarmTime now) {
  if (!token_expires) {
    return true;
  }
  return *token_expires - now >= policy.min_token_life + policy.min_useful_life;
}

std::string_view to_string(WarmVerdict verdict) {
  switch (verdict) {
    case WarmVerdict::usable:
      return "usable";
    case WarmVerdict::too_idle:
      return "parked too long (server idle limit)";
    case WarmVerdict::token_too_old:
      return "token too close to its expiry";
    case WarmVerdict::not_wanted:
      return "no client login within the prewarm window";
  }
  return "unknown";
}

WarmVerdict judge_warm(const PrewarmPolicy& policy, const WarmStamp& stamp,
                       std::optional<PrewarmTime> last_login, PrewarmTime now) {
  if (stamp.token_expires && *stamp.token_expires - now < policy.min_token_life) {
    return WarmVerdict::token_too_old;
  }
  if (now - stamp.created >= policy.max_idle) {
    return WarmVerdict::too_idle;
  }
  if (!within_window(policy, last_login, now)) {
    return WarmVerdict::not_wanted;
  }
  return WarmVerdict::usable;
}

PrewarmTime retire_at(const PrewarmPolicy& policy, const WarmStamp& stamp,
                      std::optional<PrewarmTime> last_login) {
  PrewarmTime at = stamp.created + policy.max_idle;
  if (stamp.token_expires) {
    at = std::min(at, *stamp.token_expires - policy.min_token_life);
  }
  // No login: the window is over already (judge_warm says not_wanted at once).
  at = std::min(at, last_login ? *last_login + policy.window : stamp.created);
  return at;
}

Admission admit(const PrewarmPolicy& policy, const AccountWarmth& account, bool warm_usable) {
  if (warm_usable) {
    return Admission::take_warm;
  }
  if (policy.max_per_account > 0 && counted_connections(account) >= policy.max_per_account) {
    return Admission::refused;
  }
  return Admission::fresh;
}

bool holds_bye(std::string_view data) {
  std::size_t start = 0;
  for (;;) {
    const auto end = data.find("\r\n", start);
    if (end == std::string_view::npos) {
      return false;
    }
    const auto line = data.substr(start, end - start);
    // Status words are case-insensitive (RFC 9051 §9, "* bye" is a BYE).
    if (line.size() >= 5 && ascii_iequals(line.substr(0, 5), "* BYE") &&
        (line.size() == 5 || line[5] == ' ')) {
      return true;
    }
    start = end + 2;
  }
}

}  // namespace iop::proxy
