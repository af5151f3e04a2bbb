#pragma once
// What every subcommand shares: the common flags, the one-line failure, reading secrets from
// stdin or a terminal, and opening the services.

#include <csignal>
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
  int exit_code = 1;
};

[[noreturn]] void die(std::string message);

// Ctrl-C (or SIGTERM) during an interactive step: "cancelled; nothing was stored", exit 130.
[[noreturn]] void die_cancelled();

// Installs a SIGINT/SIGTERM handler for the duration of an interactive step (a flow, a prompt),
// so Ctrl-C ends it cleanly, terminal restored and nothing stored; the previous handlers come
// back at destruction.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  [[nodiscard]] static bool interrupted();

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

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

// One line from stdin without its line ending. With a terminal, prompts on stderr with echo off
// (restored on every path, Ctrl-C included).
Secret read_secret_line(std::string_view prompt);

// The whole file at `path` as a Secret (a private key, a certificate bundle); `what` names the
// flag in the error.
Secret read_secret_file(const std::string& path, std::string_view what);

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
