#pragma once
// Child processes for tests: real peers (redis-server, the test token endpoint) and the
// project's own binary.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iop::test {

class Process {
 public:
  // Starts `argv` (argv[0] looked up in PATH). stdout/stderr go to `log_file` when given,
  // else are inherited. `stdin_data`, when given, is written to the child's stdin, then closed.
  static Process start(const std::vector<std::string>& argv,
                       const std::optional<std::filesystem::path>& log_file = std::nullopt,
                       const std::optional<std::string>& stdin_data = std::nullopt);
  Process() = default;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();  // SIGKILL + reap when still running

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] bool running();
  void signal(int sig);
  // Waits for exit; returns the exit status (128 + signal for a signal), or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  void kill_and_wait();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// How a peer's start-up ended.
enum class StartUp { ready, exited, timed_out };

// Waits (poll_until) for a started peer: until `ready` holds, `process` exits (checked first in
// each round, so a peer that dies at start-up is told apart from a slow one), or `limit` passes.
StartUp wait_for_start(Process& process, const std::function<bool()>& ready,
                       std::chrono::milliseconds limit);

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` to completion, feeding `stdin_data`, capturing stdout and stderr.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& stdin_data = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// Whether something accepts a TCP connection on 127.0.0.1:`port` right now (the connection is
// closed at once). With wait_until: "the proxy is listening".
bool accepts_connections(int port);

// The whole content of `path`, bytes as they are; "" when it cannot be read (not written yet).
std::string read_file(const std::filesystem::path& path);

// How many times `needle` occurs in `text` (overlapping occurrences count): "one warning, not
// one per retry".
std::size_t count_of(std::string_view text, std::string_view needle);

// A fresh folder under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace iop::test
