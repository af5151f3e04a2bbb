#include "auth/json_seconds.hpp"

#include <charconv>
#include <limits>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace iop::auth {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

std::optional<std::int64_t> json_seconds(const nlohmann::json& value) {
  constexpr auto int64_max = std::numeric_limits<std::int64_t>::max();
  if (value.is_number_unsigned()) {
    const auto v = value.get<std::uint64_t>();
    return v > static_cast<std::uint64_t>(int64_max) ? int64_max : static_cast<std::int64_t>(v);
  }
  if (value.is_number_integer()) {
    return value.get<std::int64_t>();
  }
  if (!value.is_string()) {
    return std::nullopt;
  }
  return seconds_text(value.get_ref<const std::string&>());
}

std::optional<std::int64_t> seconds_text(std::string_view text) {
  const std::string_view s = trim(text);
  if (s.empty() || s.size() > 12 || s.front() == '-') {
    return std::nullopt;
  }
  std::int64_t out = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return out;
}

}  // namespace iop::auth
