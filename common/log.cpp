#include "common/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <memory>

#include "common/sanitize.hpp"

namespace iop {
namespace {

// No real log line is longer; a longer one is cut (with sanitize_for_log's marker).
constexpr std::size_t max_log_message_bytes = 8 * 1024;

// The safety net under every log line: call sites sanitize (and cut short) each peer-supplied
// field with sanitize_for_log(); this applies the same rule to the whole message, so that a
// field someone forgot still cannot start a forged line (CR/LF) or drive the terminal.
// %* : the message sanitized, then escaped for a JSON string (`json`); %~ : sanitized (text).
template <bool json>
class MessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    auto text = sanitize_for_log(std::string_view(msg.payload.data(), msg.payload.size()),
                                 max_log_message_bytes);
    if constexpr (json) {
      text = json_escape(text);
    }
    dest.append(text.data(), text.data() + text.size());
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<MessageFlag>();
  }
};

}  // namespace

std::string json_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
          out += c;
        }
    }
  }
  return out;
}

Result<void> setup_logging(std::string_view level, LogFormat format) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return fail(
        Errc::config_error,
        fmt::format("[log] level: expected trace, debug, info, warn, error or off, got \"{}\"",
                    level));
  }
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("iop", std::move(sink));
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (format == LogFormat::json) {
    formatter->add_flag<MessageFlag<true>>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","thread":%t,"msg":"%*"})");
  } else {
    formatter->add_flag<MessageFlag<false>>('~').set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %~");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
  return {};
}

}  // namespace iop
