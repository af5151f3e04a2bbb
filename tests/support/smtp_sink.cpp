#include "tests/support/smtp_sink.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace iop::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The first bytes 127.0.0.1:`port` sends, or "" when nothing listens there yet.
std::string greeting(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return {};
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    const auto n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.assign(buf, static_cast<std::size_t>(n));
    }
    ::write(fd, "QUIT\r\n", 6);
  }
  ::close(fd);
  return out;
}

}  // namespace

SmtpSink::SmtpSink() {
  if (run_command({"/usr/bin/python3", "-c", "import aiosmtpd"}).exit_code != 0) {
    throw std::runtime_error(
        "SmtpSink: Python's aiosmtpd is missing; install python3-aiosmtpd "
        "(scripts/install-deps.sh)");
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    port_ = free_port();
    process_ = Process::start(
        {"/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", fmt::format("127.0.0.1:{}", port_), "-c",
         "aiosmtpd.handlers.Mailbox", (dir_.path() / "Maildir").string()},
        dir_.path() / "sink.out");
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (process_.running() && std::chrono::steady_clock::now() < deadline) {
      if (greeting(port_).rfind("220", 0) == 0) {
        return;
      }
      std::this_thread::sleep_for(20ms);
    }
    process_.kill_and_wait();
  }
  throw std::runtime_error("SmtpSink: aiosmtpd did not start; its output:\n" +
                           read_file(dir_.path() / "sink.out"));
}

SmtpSink::~SmtpSink() { process_.kill_and_wait(); }

std::vector<std::string> SmtpSink::messages() const {
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_.path() / "Maildir" / "new", ec)) {
    files.emplace_back(entry.last_write_time(ec), entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> out;
  for (const auto& [time, path] : files) {
    out.push_back(read_file(path));
  }
  return out;
}

bool SmtpSink::wait_for_messages(std::size_t count, std::chrono::milliseconds limit) const {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (messages().size() < count) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

std::string message_body(const std::string& message) {
  for (const std::string_view separator : {"\r\n\r\n", "\n\n"}) {
    if (const auto at = message.find(separator); at != std::string::npos) {
      return message.substr(at + separator.size());
    }
  }
  return {};
}

}  // namespace iop::test
