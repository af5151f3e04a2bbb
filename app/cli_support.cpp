#include "app/cli_support.hpp"

#include <termios.h>
#include <unistd.h>

#include <ctime>
#include <iostream>

#include "common/email.hpp"
#include "common/log.hpp"

namespace iop::app {

void die(std::string message) { throw CommandError{std::move(message)}; }

std::string normalized(const std::string& email) { return check(normalize_email(email)); }

bool stdin_is_tty() { return ::isatty(STDIN_FILENO) != 0; }

Secret read_secret_line(std::string_view prompt) {
  const bool tty = stdin_is_tty();
  termios saved{};
  if (tty) {
    std::cerr << prompt << ": " << std::flush;
    ::tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  const bool got = static_cast<bool>(std::getline(std::cin, line));
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::cerr << '\n';
  }
  Secret value(std::move(line));
  if (!got && value.empty()) {
    die(fmt::format("expected {} on standard input", prompt));
  }
  std::string trimmed = value.reveal();
  while (!trimmed.empty() && (trimmed.back() == '\r' || trimmed.back() == '\n')) {
    trimmed.pop_back();
  }
  return Secret(std::move(trimmed));
}

std::string format_time(std::int64_t unix_seconds) {
  if (unix_seconds <= 0) {
    return "-";
  }
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

namespace {

void apply_log_flags(Config& config, const Options& opts) {
  if (opts.log_format == "json") {
    config.log.format = LogFormat::json;
  } else if (opts.log_format == "text") {
    config.log.format = LogFormat::text;
  }
}

}  // namespace

Config load(const Options& opts) {
  auto config = check(load_effective_config(opts.config));
  apply_log_flags(config, opts);
  return config;
}

void setup_cli_logging(const Config& config, bool verbose, bool serving) {
  // Commands print their results; their log lines are for trouble, unless asked.
  const std::string level = serving || verbose ? config.log.level : "warn";
  check(setup_logging(level, config.log.format));
}

std::unique_ptr<Services> open_services(const Options& opts, bool serving, KeyPolicy policy) {
  auto config = load(opts);
  setup_cli_logging(config, opts.verbose, serving);
  return check(make_services(std::move(config), policy));
}

}  // namespace iop::app
