#pragma once
// Durations written in configuration files: "250ms", "30s", "5m", "1h", "7d".

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace iop {

// Parses a non-negative integer followed by one unit: ms, s, m (or min), h, d.
// Returns nullopt for anything else (no unit, a fraction, a sign, overflow).
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// The shortest exact spelling of `d` in the units above ("90s", "5m", "250ms").
std::string format_duration(std::chrono::milliseconds d);

}  // namespace iop
