#include "common/duration.hpp"

#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <utility>

#include "common/ascii.hpp"

namespace iop {
namespace {

struct Unit {
  std::string_view suffix;
  std::int64_t millis;
};

constexpr std::array<Unit, 6> units{{
    {"ms", 1},
    {"s", 1000},
    {"min", 60'000},
    {"m", 60'000},
    {"h", 3'600'000},
    {"d", 86'400'000},
}};

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && is_ascii_digit(text[digits])) {
    ++digits;
  }
  if (digits == 0) {
    return std::nullopt;
  }
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
  if (ec != std::errc{} || end != text.data() + digits) {
    return std::nullopt;
  }
  const std::string_view suffix = text.substr(digits);
  for (const auto& unit : units) {
    if (suffix == unit.suffix) {
      if (value > std::numeric_limits<std::int64_t>::max() / unit.millis) {
        return std::nullopt;
      }
      return std::chrono::milliseconds(value * unit.millis);
    }
  }
  return std::nullopt;
}

std::string format_duration(std::chrono::milliseconds d) {
  const std::int64_t ms = d.count();
  if (ms == 0) {
    return "0s";
  }
  constexpr std::array<std::pair<std::string_view, std::int64_t>, 5> by_size{{
      {"d", 86'400'000},
      {"h", 3'600'000},
      {"m", 60'000},
      {"s", 1000},
      {"ms", 1},
  }};
  for (const auto& [suffix, millis] : by_size) {
    if (ms % millis == 0) {
      return std::to_string(ms / millis) + std::string(suffix);
    }
  }
  return std::to_string(ms) + "ms";
}

}  // namespace iop
