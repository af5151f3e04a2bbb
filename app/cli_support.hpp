#pragma once
// What every subcommand shares: the common flags, the one-line failure, reading secrets from
// stdin or a terminal, and opening the services.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "app/config.hpp"
#include "app/services.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::app {

// A failed command: run_cli prints the one-line reason to stderr and exits 1.
struct CommandError {
  std::string message;
};

[[noreturn]] void die(std::string message);

template <class T>
T check(Result<T> r) {
  if (!r) {
    die(r.error().message);
  }
  if constexpr (!std::is_void_v<T>) {
    return std::move(*r);
  }
}

// The normalized form of an email given on the command line (or die).
std::string normalized(const std::string& email);

// Whether standard input is a terminal.
bool stdin_is_tty();

// One line from stdin without its line ending. With a terminal, prompts on stderr with echo off.
Secret read_secret_line(std::string_view prompt);

// "2026-11-29 10:00:00Z", or "-" for 0.
std::string format_time(std::int64_t unix_seconds);

struct Options {
  std::optional<std::filesystem::path> config;
  bool verbose = false;
  std::string log_format;  // overrides [log] format when set
};

Config load(const Options& opts);
void setup_cli_logging(const Config& config, bool verbose, bool serving);
std::unique_ptr<Services> open_services(const Options& opts, bool serving = false,
                                        KeyPolicy policy = KeyPolicy::create_if_new);

}  // namespace iop::app
