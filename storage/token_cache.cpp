#include "storage/token_cache.hpp"

#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <mutex>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "common/ascii.hpp"
#include "common/host_port.hpp"
#include "common/json_wipe.hpp"
#include "common/percent.hpp"

namespace iop::storage {

namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds max_ttl = 24h;
constexpr std::chrono::milliseconds first_backoff = 100ms;
constexpr std::chrono::milliseconds max_backoff = 5s;

// The standard compare-and-delete unlock
// (https://redis.io/docs/manual/patterns/distributed-locks/): deleting only when the value is still
// our owner id keeps a lock that expired and was taken by another instance from being released by
// us.
constexpr std::string_view unlock_script =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

std::optional<int> parse_int(std::string_view text, int min, int max) {
  int value = 0;
  if (!all_ascii_digits(text)) {
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

// hiredis 0.14 writes with write(2), which raises SIGPIPE when Redis has closed the connection;
// the default action would kill the proxy. A library must not change the process-wide
// disposition, so, like libpq's pq_block_sigpipe(), block SIGPIPE on this thread for the
// duration of the call and consume one that the call raised before unblocking.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_set_);
    sigaddset(&pipe_set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_mask_);
    was_pending_ = pending();
  }
  ~SigpipeGuard() {
    if (!was_pending_ && pending()) {
      const timespec zero{};
      while (sigtimedwait(&pipe_set_, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  [[nodiscard]] bool pending() const {
    sigset_t set;
    sigemptyset(&set);
    return sigpending(&set) == 0 && sigismember(&set, SIGPIPE) == 1;
  }
  sigset_t pipe_set_{};
  sigset_t old_mask_{};
  bool was_pending_ = false;
};

}  // namespace

Result<RedisAddress> parse_redis_url(std::string_view url) {
  constexpr std::string_view scheme = "redis://";
  if (ascii_istarts_with(url, "rediss://")) {
    return fail(Errc::config_error, "Redis URL: TLS (rediss://) is not supported; use redis://");
  }
  if (ascii_istarts_with(url, "unix://")) {
    return fail(Errc::config_error, "Redis URL: unix sockets are not supported; use redis://");
  }
  if (!ascii_istarts_with(url, scheme)) {
    return fail(Errc::config_error,
                "Redis URL must look like redis://[:password@]host[:port][/db]");
  }
  std::string_view rest = url.substr(scheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    // Checked before the userinfo split so '?' inside a password is reported as a hint to
    // percent-encode it rather than silently mis-parsed.
    return fail(Errc::config_error,
                "Redis URL: query strings and fragments are not supported (percent-encode '?' "
                "and '#' in a password)");
  }

  RedisAddress address;
  // The last '@' ends the userinfo, so an unencoded '@' or '/' in the password still works.
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      // redis://word@host is read as a user name by some clients and as a password by others;
      // refuse to guess.
      return fail(Errc::config_error,
                  "Redis URL: the part before '@' needs a ':' (redis://:password@host or "
                  "redis://user:password@host)");
    }
    // A user name (Redis 6 ACL) is accepted and ignored: AUTH is sent with the password only,
    // which authenticates as the default user.
    auto password = percent_decode(userinfo.substr(colon + 1));
    if (!password) {
      return fail(Errc::config_error, "Redis URL: the password has a malformed %-escape");
    }
    address.password = Secret(std::move(*password));
  }

  // The authority ends at the first '/' (RFC 3986 §3.2); '?' and '#' were refused above.
  const auto slash = rest.find('/');
  auto authority = parse_authority(rest.substr(0, slash));
  if (!authority) {
    return fail(Errc::config_error, "Redis URL: " + authority.error().message);
  }
  address.host = std::move(authority->host);
  address.port = authority->port.value_or(address.port);
  rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);

  if (!rest.empty()) {
    // rest starts with '/' here. "redis://host/" means database 0, as in redis-cli.
    const std::string_view db = rest.substr(1);
    if (!db.empty()) {
      const auto number = parse_int(db, 0, INT_MAX);
      if (!number) {
        return fail(Errc::config_error,
                    "Redis URL: the database after '/' must be a non-negative number");
      }
      address.db = *number;
    }
  }
  return address;
}

struct TokenCache::Impl {
  Impl(RedisSettings s, RedisAddress a, MasterKey k)
      : settings(std::move(s)),
        address(std::move(a)),
        key(std::move(k)),
        display(format_host_port(address.host, address.port)) {}

  RedisSettings settings;
  RedisAddress address;
  MasterKey key;
  std::string display;  // host:port for log lines; never the password

  std::mutex mutex;  // guards everything below except `healthy`
  ContextPtr context;
  bool context_used = false;  // whether `context` has completed a command already
  std::chrono::milliseconds backoff{0};
  SteadyClock::time_point retry_at{};
  // Optimistic at start so the first failure logs the warning; atomic so healthy() never
  // waits behind a call blocked on the network.
  std::atomic<bool> healthy{true};

  // What failed, for the log. Never holds a value or a password.
  std::string reason;
  bool timed_out = false;  // whether the last send() failed by timeout

  std::string token_key(std::string_view email) const {
    return settings.key_prefix + "token:" + std::string(email);
  }
  std::string lock_key(std::string_view email) const {
    return settings.key_prefix + "lock:" + std::string(email);
  }

  void mark_failed() {
    context.reset();
    context_used = false;
    backoff = backoff.count() == 0 ? first_backoff : std::min(backoff * 2, max_backoff);
    retry_at = SteadyClock::now() + backoff;
    if (healthy.exchange(false)) {
      spdlog::warn("Redis at {} unavailable ({}): serving from the database", display, reason);
    }
  }

  void mark_ok() {
    backoff = 0ms;
    if (!healthy.exchange(true)) {
      spdlog::info("Redis at {} reachable again: using the token cache", display);
    }
  }

  // Sends one command on `context`; on failure sets `reason` and returns null. An error reply
  // counts as a failure (it means NOAUTH, a wrong database, OOM or similar misconfiguration).
  ReplyPtr send(const std::vector<std::string_view>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    errno = 0;
    timed_out = false;
    ReplyPtr reply(static_cast<redisReply*>(
        redisCommandArgv(context.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (!reply) {
      const int err = errno;
      if (context->err == REDIS_ERR_IO && (err == EAGAIN || err == EWOULDBLOCK)) {
        timed_out = true;
        reason = fmt::format("timed out after {} ms", settings.timeout.count());
      } else if (context->err == REDIS_ERR_EOF) {
        reason = "connection closed by the server";
      } else {
        reason = context->errstr;
      }
      return nullptr;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      // The first word is the error code (NOAUTH, WRONGPASS, LOADING, ...). Redis error texts
      // echo no arguments, but keeping only the code is safe whatever the server says.
      std::string_view text(reply->str, reply->len);
      reason = fmt::format("{} replied {}", std::string_view(args.front()),
                           text.substr(0, text.find(' ')));
      return nullptr;
    }
    return reply;
  }

  // Connects, authenticates and selects the database. False (with `reason`) on failure.
  bool connect() {
    const timeval tv = to_timeval(settings.timeout);
    context.reset(redisConnectWithTimeout(address.host.c_str(), address.port, tv));
    if (!context) {
      reason = "cannot allocate a connection";
      return false;
    }
    if (context->err != 0) {
      reason = context->errstr;
      return false;
    }
    // Without this the connection timeout does not cover commands: a Redis that accepts but
    // never answers would block the caller for as long as the kernel keeps the socket.
    if (redisSetTimeout(context.get(), tv) != REDIS_OK) {
      reason = "cannot set the command timeout";
      return false;
    }
    if (!address.password.empty()) {
      if (!send({"AUTH", address.password.reveal()})) {
        return false;
      }
    }
    if (address.db != 0) {
      const std::string db = std::to_string(address.db);
      if (!send({"SELECT", db})) {
        return false;
      }
    }
    context_used = false;
    return true;
  }

  // Runs one command, connecting first if needed. Returns null when Redis is unavailable or
  // backing off; then the caller treats the call as a miss or a no-op.
  ReplyPtr run(const std::vector<std::string_view>& args) {
    if (!context && SteadyClock::now() < retry_at) {
      return nullptr;  // backing off: no network at all
    }
    const SigpipeGuard no_sigpipe;
    if (!context) {
      if (!connect()) {
        mark_failed();
        return nullptr;
      }
    }
    ReplyPtr reply = send(args);
    if (!reply && context && context->err != 0 && !timed_out && context_used) {
      // A connection that sat idle may have been closed by the server (its `timeout` setting)
      // or by a Redis restart (EOF, ECONNRESET or EPIPE); that is not an outage, so retry once
      // on a fresh connection. All our commands are idempotent except SET NX, where a retry
      // after a lost reply reads as held_elsewhere: the lock then just runs out its TTL.
      if (connect()) {
        reply = send(args);
      }
    }
    if (!reply) {
      mark_failed();
      return nullptr;
    }
    context_used = true;
    mark_ok();
    return reply;
  }

  // Drops a value we cannot use, so it is not tried again until it expires.
  void drop(const std::string& redis_key) { run({"DEL", redis_key}); }
};

Result<std::unique_ptr<TokenCache>> TokenCache::create(RedisSettings settings, MasterKey key) {
  IOP_TRY_ASSIGN(auto address, parse_redis_url(settings.url));
  if (settings.timeout <= 0ms) {
    return fail(Errc::config_error, "Redis timeout must be positive");
  }
  auto impl = std::make_unique<Impl>(std::move(settings), std::move(address), std::move(key));
  return std::unique_ptr<TokenCache>(new TokenCache(std::move(impl)));
}

TokenCache::TokenCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TokenCache::~TokenCache() = default;

std::optional<CachedToken> TokenCache::get(std::string_view email) {
  std::lock_guard lock(impl_->mutex);
  const std::string key = impl_->token_key(email);
  ReplyPtr reply = impl_->run({"GET", key});
  if (!reply || reply->type != REDIS_REPLY_STRING) {
    return std::nullopt;  // unavailable, or nil: not cached
  }
  const std::string aad = "redis:" + std::string(email);
  auto plain = open_sealed(impl_->key, std::string_view(reply->str, reply->len), aad);
  if (!plain) {
    // Another master key, a value copied from another account's key, or garbage.
    spdlog::warn("Redis value for {} does not decrypt; deleting it", email);
    impl_->drop(key);
    return std::nullopt;
  }
  // parse() without exceptions: a malformed value is an expected outcome here.
  auto json = nlohmann::json::parse(plain->reveal(), nullptr, false);
  const JsonWipeGuard wipe_json(json);  // it holds copies of both tokens
  const auto field = [&json](const char* name) -> nlohmann::json* {
    const auto it = json.find(name);
    return it == json.end() ? nullptr : &*it;
  };
  nlohmann::json* access = json.is_object() ? field("access_token") : nullptr;
  nlohmann::json* expiry = json.is_object() ? field("expiry") : nullptr;
  nlohmann::json* refresh = json.is_object() ? field("refresh_token") : nullptr;
  nlohmann::json* refreshed = json.is_object() ? field("refreshed_at_ms") : nullptr;
  if (!access || !access->is_string() || !expiry || !expiry->is_number_integer() || !refresh ||
      !refresh->is_string() || !refreshed || !refreshed->is_number_integer()) {
    spdlog::warn("Redis value for {} is malformed; deleting it", email);
    impl_->drop(key);
    return std::nullopt;
  }
  CachedToken token;
  token.access_token = Secret(std::move(access->get_ref<std::string&>()));
  token.expiry = expiry->get<std::int64_t>();
  token.refresh_token = Secret(std::move(refresh->get_ref<std::string&>()));
  token.refreshed_at_ms = refreshed->get<std::int64_t>();
  return token;
}

std::chrono::milliseconds cache_ttl(std::int64_t expiry, SystemTime now, Retention retention) {
  if (retention == Retention::refresh_pending) {
    // The refresh token in this entry may be the only valid one left (the endpoint revokes the
    // previous one on use): it must outlive the access token until the database has it. The
    // cap still holds, so an entry nobody persists does not stay forever.
    return max_ttl;
  }
  const auto until_expiry = std::chrono::milliseconds(expiry * 1000 - to_unix_millis(now));
  return std::min(until_expiry, max_ttl);
}

bool TokenCache::put(std::string_view email, const CachedToken& token, SystemTime now,
                     Retention retention) {
  const auto ttl = cache_ttl(token.expiry, now, retention);
  if (ttl <= 0ms) {
    return false;  // an expired token is no use to anyone
  }
  nlohmann::json json = {
      {"access_token", token.access_token.reveal()},
      {"expiry", token.expiry},
      {"refresh_token", token.refresh_token.reveal()},
      {"refreshed_at_ms", token.refreshed_at_ms},
  };
  const std::string blob = seal(impl_->key, Secret(json.dump()), "redis:" + std::string(email));
  wipe_json_strings(json);  // its copies of both tokens
  const std::string ttl_text = std::to_string(ttl.count());

  std::lock_guard lock(impl_->mutex);
  const std::string key = impl_->token_key(email);
  return impl_->run({"SET", key, blob, "PX", ttl_text}) != nullptr;
}

bool TokenCache::erase(std::string_view email) {
  std::lock_guard lock(impl_->mutex);
  const std::string key = impl_->token_key(email);
  return impl_->run({"DEL", key}) != nullptr;
}

TokenCache::Lock TokenCache::try_lock(std::string_view email, std::string_view owner,
                                      std::chrono::milliseconds ttl) {
  // PX 0 is an error reply, which would count as an outage.
  const std::string ttl_text = std::to_string(std::max<std::int64_t>(ttl.count(), 1));
  std::lock_guard lock(impl_->mutex);
  const std::string key = impl_->lock_key(email);
  ReplyPtr reply = impl_->run({"SET", key, owner, "NX", "PX", ttl_text});
  if (!reply) {
    return Lock::unavailable;
  }
  // NX answers nil when the key exists, +OK when we set it.
  return reply->type == REDIS_REPLY_NIL ? Lock::held_elsewhere : Lock::acquired;
}

void TokenCache::unlock(std::string_view email, std::string_view owner) {
  std::lock_guard lock(impl_->mutex);
  const std::string key = impl_->lock_key(email);
  impl_->run({"EVAL", unlock_script, "1", key, owner});
}

std::optional<std::string> TokenCache::lock_owner(std::string_view email) {
  std::lock_guard lock(impl_->mutex);
  const std::string key = impl_->lock_key(email);
  ReplyPtr reply = impl_->run({"GET", key});
  if (!reply || reply->type != REDIS_REPLY_STRING) {
    return std::nullopt;
  }
  return std::string(reply->str, reply->len);
}

std::string TokenCache::lock_key(std::string_view email) const { return impl_->lock_key(email); }

bool TokenCache::healthy() const { return impl_->healthy.load(); }

}  // namespace iop::storage
