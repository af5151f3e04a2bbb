#pragma once
// Process-wide logging: one spdlog logger on stderr, text or JSON lines.

#include <spdlog/spdlog.h>

#include <string_view>

#include "common/result.hpp"

namespace iop {

enum class LogFormat { text, json };

// Installs the default logger. `level` is one of trace, debug, info, warn, error, off.
Result<void> setup_logging(std::string_view level, LogFormat format);

// Escapes `text` for use inside a JSON string literal.
std::string json_escape(std::string_view text);

}  // namespace iop
