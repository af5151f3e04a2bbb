#include "app/cli_support.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <iostream>

#include "common/email.hpp"
#include "common/log.hpp"

namespace iop::app {

void die(std::string message) { throw CommandError{std::move(message)}; }

void die_cancelled() { throw CommandError{"cancelled; nothing was stored", 128 + SIGINT}; }

namespace {

std::atomic<bool> interrupted_flag{false};

extern "C" void on_interrupt(int /*sig*/) { interrupted_flag.store(true); }

}  // namespace

InterruptGuard::InterruptGuard() {
  interrupted_flag.store(false);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking read returns at once with EINTR
  ::sigaction(SIGINT, &sa, &old_int_);
  ::sigaction(SIGTERM, &sa, &old_term_);
}

InterruptGuard::~InterruptGuard() {
  ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
}

bool InterruptGuard::interrupted() { return interrupted_flag.load(); }

std::string normalized(const std::string& email) { return check(normalize_email(email)); }

bool stdin_is_tty() { return ::isatty(STDIN_FILENO) != 0; }

Secret read_secret_line(std::string_view prompt) {
  const bool tty = stdin_is_tty();
  InterruptGuard guard;  // so Ctrl-C at the prompt gives the terminal its echo back
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
  if (InterruptGuard::interrupted()) {
    die_cancelled();
  }
  if (!got && value.empty()) {
    die(fmt::format("expected {} on standard input", prompt));
  }
  std::string trimmed = value.reveal();
  while (!trimmed.empty() && (trimmed.back() == '\r' || trimmed.back() == '\n')) {
    trimmed.pop_back();
  }
  return Secret(std::move(trimmed));
}

Secret read_secret_file(const std::string& path, std::string_view what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    die(fmt::format("{}: cannot read {}: {}", what, path, std::strerror(errno)));
  }
  // Read straight into the string the Secret will own, sized once: no stream buffer or
  // reallocation leaves a copy of the key behind unwiped.
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 1024 * 1024) {
    ::close(fd);
    die(fmt::format("{}: {} is not a regular file of at most 1 MiB (a PEM certificate and key)",
                    what, path));
  }
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < bytes.size()) {
    const auto n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      const Secret partial(std::move(bytes));  // wiped on the way out
      die(fmt::format("{}: cannot read {}: {}", what, path, std::strerror(err)));
    }
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return Secret(std::move(bytes));  // moves the buffer: no copy to wipe
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
  config.warnings = config_file_warnings(config);
  apply_log_flags(config, opts);
  return config;
}

void setup_cli_logging(const Config& config, bool verbose, bool serving) {
  // Commands print their results; their log lines are for trouble, unless asked.
  const std::string level = serving || verbose ? config.log.level : "warn";
  check(setup_logging(level, config.log.format));
  for (const auto& warning : config.warnings) {
    spdlog::warn("{}", warning);
  }
}

std::unique_ptr<Services> open_services(const Options& opts, bool serving, KeyPolicy policy) {
  auto config = load(opts);
  setup_cli_logging(config, opts.verbose, serving);
  return check(make_services(std::move(config), policy));
}

}  // namespace iop::app
