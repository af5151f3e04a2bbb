#pragma once
// A real redis-server on a free loopback port, for integration tests: no persistence, logs in
// a temp folder, stopped (SIGKILL) at destruction. Stopping and starting it again on the same
// port is the outage test; flushall() is the cache-loss test.

#include <chrono>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace iop::test {

class RedisServer {
 public:
  // Starts redis-server and waits until it answers PING. `password`, when not empty, is passed
  // as --requirepass. Throws std::runtime_error when it does not come up in time.
  explicit RedisServer(std::string password = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // redis://[:password@]127.0.0.1:port
  [[nodiscard]] std::string url() const;
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] bool running() { return process_.running(); }

  // Kills the server (SIGKILL) and waits for it to exit. Nothing survives: no persistence.
  void stop();
  // Starts it again on the same port and waits for PING. No-op when already running.
  void start();

  // The helpers below use a short-lived connection of their own and throw std::runtime_error
  // when the server does not answer.

  // FLUSHALL: every key is gone.
  void flushall();
  // The raw bytes stored under `key`, or "" when the key does not exist.
  std::string raw_get(const std::string& key);
  // PTTL of `key` in milliseconds: -2 when missing, -1 when it has no expiry.
  long long ttl_ms(const std::string& key);
  // KEYS `pattern`.
  std::vector<std::string> keys(const std::string& pattern);
  // SET `key` `value` with no expiry.
  void set_raw(const std::string& key, const std::string& value);

 private:
  void wait_until_ready(std::chrono::milliseconds limit);

  TempDir dir_;
  std::string password_;
  int port_ = 0;
  Process process_;
};

}  // namespace iop::test
