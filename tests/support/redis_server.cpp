#include "tests/support/redis_server.hpp"

#include <sys/time.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>

#include <hiredis/hiredis.h>

namespace iop::test {

namespace {

using namespace std::chrono_literals;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

// One command on `context`, or null with `error` set.
ReplyPtr command(redisContext* context, const std::vector<std::string>& args, std::string& error) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.c_str());
    lens.push_back(a.size());
  }
  ReplyPtr reply(static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lens.data())));
  if (!reply) {
    error = context->errstr;
    return nullptr;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    error = std::string(reply->str, reply->len);
    return nullptr;
  }
  return reply;
}

// A fresh connection (authenticated when `password` is set), or null with `error` set.
ContextPtr connect(int port, const std::string& password, std::string& error) {
  const timeval tv{1, 0};
  ContextPtr context(redisConnectWithTimeout("127.0.0.1", port, tv));
  if (!context) {
    error = "cannot allocate a hiredis context";
    return nullptr;
  }
  if (context->err != 0) {
    error = context->errstr;
    return nullptr;
  }
  redisSetTimeout(context.get(), tv);
  if (!password.empty() && !command(context.get(), {"AUTH", password}, error)) {
    return nullptr;
  }
  return context;
}

}  // namespace

RedisServer::RedisServer(std::string password) : password_(std::move(password)) {
  // free_port() can race with another process taking the port before redis binds it; a few
  // fresh ports make that a non-event.
  std::string last_error;
  for (int attempt = 0; attempt < 3; ++attempt) {
    port_ = free_port();
    try {
      start();
      return;
    } catch (const std::runtime_error& e) {
      last_error = e.what();
      stop();
    }
  }
  throw std::runtime_error(last_error);
}

RedisServer::~RedisServer() { stop(); }

std::string RedisServer::url() const {
  const std::string auth = password_.empty() ? "" : ":" + password_ + "@";
  return "redis://" + auth + "127.0.0.1:" + std::to_string(port_);
}

void RedisServer::stop() { process_.kill_and_wait(); }

void RedisServer::start() {
  if (process_.running()) {
    return;
  }
  std::vector<std::string> argv = {
      "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
      "--save",       "",       "--appendonly",        "no",     "--daemonize",
      "no",           "--dir",  dir_.path().string()};
  if (!password_.empty()) {
    argv.insert(argv.end(), {"--requirepass", password_});
  }
  process_ = Process::start(argv, dir_.path() / "redis.log");
  wait_until_ready(10s);
}

void RedisServer::wait_until_ready(std::chrono::milliseconds limit) {
  std::string error;
  const auto started = wait_for_start(
      process_,
      [&] {
        auto context = connect(port_, password_, error);
        return context && command(context.get(), {"PING"}, error) != nullptr;
      },
      limit);
  if (started == StartUp::exited) {
    throw std::runtime_error("redis-server on port " + std::to_string(port_) +
                             " exited at startup; its log:\n" +
                             read_file(dir_.path() / "redis.log"));
  }
  if (started == StartUp::timed_out) {
    throw std::runtime_error("redis-server on port " + std::to_string(port_) +
                             " did not answer PING in time (" + error + "); its log:\n" +
                             read_file(dir_.path() / "redis.log"));
  }
}

namespace {

// Runs one command on a short-lived connection, throwing on any failure.
ReplyPtr run_checked(int port, const std::string& password, const std::vector<std::string>& args) {
  std::string error;
  ContextPtr context = connect(port, password, error);
  if (!context) {
    throw std::runtime_error("cannot reach redis-server on port " + std::to_string(port) + ": " +
                             error);
  }
  ReplyPtr reply = command(context.get(), args, error);
  if (!reply) {
    throw std::runtime_error("redis-server " + args.front() + " failed: " + error);
  }
  return reply;
}

}  // namespace

void RedisServer::flushall() { run_checked(port_, password_, {"FLUSHALL"}); }

std::string RedisServer::raw_get(const std::string& key) {
  const ReplyPtr reply = run_checked(port_, password_, {"GET", key});
  if (reply->type != REDIS_REPLY_STRING) {
    return {};
  }
  return {reply->str, reply->len};
}

long long RedisServer::ttl_ms(const std::string& key) {
  const ReplyPtr reply = run_checked(port_, password_, {"PTTL", key});
  return reply->integer;
}

std::vector<std::string> RedisServer::keys(const std::string& pattern) {
  const ReplyPtr reply = run_checked(port_, password_, {"KEYS", pattern});
  std::vector<std::string> out;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    out.emplace_back(reply->element[i]->str, reply->element[i]->len);
  }
  return out;
}

void RedisServer::set_raw(const std::string& key, const std::string& value) {
  run_checked(port_, password_, {"SET", key, value});
}

}  // namespace iop::test
