#include "proxy/prewarm.hpp"

#include <spdlog/spdlog.h>

#include "common/clock.hpp"
#include "proxy/connection.hpp"

namespace iop::proxy {

namespace {

// The steady-clock time at which a token expiring at `expiry` (unix seconds) expires.
PrewarmTime steady_expiry(std::int64_t expiry) {
  const auto left = from_unix_seconds(expiry) - std::chrono::system_clock::now();
  return PrewarmClock::now() + std::chrono::duration_cast<PrewarmClock::duration>(left);
}

std::int64_t seconds_left(PrewarmTime at) {
  return std::chrono::duration_cast<std::chrono::seconds>(at - PrewarmClock::now()).count();
}

}  // namespace

// A parked warm connection: the stream's mechanics are ParkedStream's (proxy/parked_stream.hpp);
// the rest is the account's, touched only on `home` too.
struct UpstreamPool::Parked : ParkedStream {
  using ParkedStream::ParkedStream;

  std::string email;
  WarmStamp stamp;
  std::vector<std::string> capabilities;
  storage::TokenSource source = storage::TokenSource::none;
};

namespace {

// On the home executor: takes the warm connection from its watcher, unless it is closing.
awaitable<std::optional<WarmConnection>> claim_on_home(std::shared_ptr<UpstreamPool::Parked> p) {
  if (!co_await claim_parked(*p)) {
    co_return std::nullopt;
  }
  WarmConnection out;
  out.stream = std::move(p->stream);
  out.capabilities = std::move(p->capabilities);
  out.pending = std::move(p->pending);
  out.token_source = p->source;
  co_return out;
}

}  // namespace

UpstreamLease::UpstreamLease(std::shared_ptr<UpstreamPool> pool, std::string email)
    : pool_(std::move(pool)), email_(std::move(email)) {}

UpstreamLease::UpstreamLease(UpstreamLease&& other) noexcept
    : pool_(std::move(other.pool_)), email_(std::move(other.email_)) {
  other.pool_.reset();
}

UpstreamLease& UpstreamLease::operator=(UpstreamLease&& other) noexcept {
  if (this != &other) {
    release();
    pool_ = std::move(other.pool_);
    email_ = std::move(other.email_);
    other.pool_.reset();
  }
  return *this;
}

UpstreamLease::~UpstreamLease() { release(); }

void UpstreamLease::release() {
  if (pool_) {
    auto pool = std::move(pool_);
    pool_.reset();
    pool->release(email_);
  }
}

std::shared_ptr<UpstreamPool> UpstreamPool::create(auth::TokenService& tokens,
                                                   net::ssl::context& tls,
                                                   UpstreamPoolSettings settings) {
  return std::make_shared<UpstreamPool>(tokens, tls, std::move(settings));
}

UpstreamPool::UpstreamPool(auth::TokenService& tokens, net::ssl::context& tls,
                           UpstreamPoolSettings settings)
    : tokens_(tokens), tls_(tls), settings_(std::move(settings)) {}

std::size_t UpstreamPool::parked() {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [email, account] : accounts_) {
    n += account.parked ? 1 : 0;
  }
  return n;
}

awaitable<Checkout> UpstreamPool::checkout(const std::string& email,
                                           const UpstreamEndpoint& endpoint) {
  const auto executor = co_await net::this_coro::executor;
  const auto& policy = settings_.policy;
  const auto now = PrewarmClock::now();
  Checkout out;
  std::shared_ptr<Parked> parked;
  std::shared_ptr<Parked> discard;
  WarmVerdict verdict = WarmVerdict::usable;
  int counted = 0;
  {
    std::lock_guard lock(mutex_);
    auto& account = accounts_[email];
    account.warmth.last_login = now;
    account.executor = executor;
    if (account.endpoint.host != endpoint.host || account.endpoint.port != endpoint.port) {
      // The account moved upstream (`account add --upstream`): a parked connection to the old
      // one is of no use.
      account.endpoint = endpoint;
      discard = std::move(account.parked);
      account.warmth.warm = false;
    }
    if (account.parked) {
      verdict = judge_warm(policy, account.parked->stamp, account.warmth.last_login, now);
      if (verdict != WarmVerdict::usable) {
        discard = std::move(account.parked);
        account.warmth.warm = false;
      }
    }
    out.admission = admit(policy, account.warmth, account.parked != nullptr);
    if (out.admission == Admission::take_warm) {
      parked = std::move(account.parked);
      account.warmth.warm = false;
    }
    if (out.admission != Admission::refused) {
      ++account.warmth.in_use;
    }
    counted = counted_connections(account.warmth);
  }
  if (discard) {
    spdlog::info("prewarm: account={} warm connection not used: {}", email, to_string(verdict));
    close_parked(discard, std::string(to_string(verdict)));
  }
  if (out.admission == Admission::refused) {
    out.refusal = fmt::format(
        "Too many connections for this account: {} upstream connections are open, the limit "
        "is {} ([upstream] max_connections_per_account)",
        counted, policy.max_per_account);
    spdlog::warn("prewarm: account={} login refused: {} upstream connections, limit {}", email,
                 counted, policy.max_per_account);
    co_return out;
  }
  out.lease = UpstreamLease(shared_from_this(), email);
  if (parked) {
    const auto home = parked->home;
    auto op = claim_on_home(parked);
    auto claim = net::co_spawn(home, std::move(op), net::use_awaitable);
    auto claimed = co_await std::move(claim);
    boost::system::error_code ec;
    const bool other_worker = claimed && claimed->stream->socket().get_executor() != executor;
    if (claimed) {
      move_to_executor(*claimed->stream, executor, ec);
    }
    if (claimed && !ec) {
      out.warm = std::move(claimed);
      spdlog::debug("prewarm: account={} login takes the warm connection{}", email,
                    other_worker ? " (moved from another worker)" : "");
    } else {
      out.admission = Admission::fresh;
      spdlog::info("prewarm: account={} warm connection dropped ({}): logging in afresh", email,
                   ec ? ec.message() : std::string("it was busy or closing"));
    }
  }
  maybe_warm(email);
  co_return out;
}

void UpstreamPool::release(const std::string& email) {
  {
    std::lock_guard lock(mutex_);
    auto it = accounts_.find(email);
    if (it != accounts_.end() && it->second.warmth.in_use > 0) {
      --it->second.warmth.in_use;
    }
  }
  maybe_warm(email);  // room under the limit again
}

void UpstreamPool::maybe_warm(const std::string& email) {
  net::any_io_executor executor;
  UpstreamEndpoint endpoint;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) {
      return;
    }
    auto it = accounts_.find(email);
    if (it == accounts_.end() || !it->second.executor ||
        !should_warm(settings_.policy, it->second.warmth, PrewarmClock::now())) {
      return;
    }
    it->second.warmth.warming = true;
    executor = *it->second.executor;
    endpoint = it->second.endpoint;
  }
  std::string who = email;
  auto op = warm_up(std::move(who), std::move(endpoint));
  net::co_spawn(executor, std::move(op), [self = shared_from_this(), email](std::exception_ptr e) {
    if (!e) {
      return;
    }
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("prewarm: account={} warm-up ended with an internal error: {}", email,
                    ex.what());
    }
    self->warm_up_failed(email);
  });
}

void UpstreamPool::warm_up_failed(const std::string& email) {
  std::lock_guard lock(mutex_);
  auto it = accounts_.find(email);
  if (it != accounts_.end()) {
    it->second.warmth.warming = false;
    it->second.warmth.last_failure = PrewarmClock::now();
  }
}

awaitable<void> UpstreamPool::warm_up(std::string email, UpstreamEndpoint endpoint) {
  const auto executor = co_await net::this_coro::executor;
  const auto& policy = settings_.policy;
  auto token = co_await login_token(tokens_, email, false, "prewarm");
  if (!token.token) {
    warm_up_failed(email);  // login_token logged why
    co_return;
  }
  std::optional<PrewarmTime> expires;
  if (!token.token->is_password && token.token->expiry > 0) {
    expires = steady_expiry(token.token->expiry);
  }
  if (!token_worth_warming(policy, expires, PrewarmClock::now())) {
    spdlog::info(
        "prewarm: account={} not warmed: its token has {} s left, a warm connection needs more "
        "than {} s ([oauth] session_min_lifetime)",
        email, expires ? seconds_left(*expires) : 0,
        std::chrono::duration_cast<std::chrono::seconds>(policy.min_token_life).count());
    warm_up_failed(email);
    co_return;
  }
  const auto source = token.token->source;
  const bool is_password = token.token->is_password;
  UpstreamEndpoint target = endpoint;
  std::string user = email;
  Secret secret = token.token->secret;
  auto upstream = co_await connect_upstream(tls_, std::move(target), std::move(user),
                                            std::move(secret), is_password, settings_.upstream);
  if (!upstream) {
    spdlog::warn("prewarm: account={} warm-up failed ({}): {}", email,
                 to_string(upstream.error().kind), upstream.error().detail);
    warm_up_failed(email);
    co_return;
  }
  auto parked = std::make_shared<Parked>(executor);
  parked->email = email;
  parked->stamp = WarmStamp{PrewarmClock::now(), expires};
  parked->stream = std::move(upstream->stream);
  parked->capabilities = std::move(upstream->capabilities);
  parked->pending = std::move(upstream->pending);
  parked->source = source;
  std::optional<PrewarmTime> last_login;
  bool keep = false;
  {
    std::lock_guard lock(mutex_);
    auto& account = accounts_[email];
    account.warmth.warming = false;
    if (!stopped_ && account.endpoint.host == endpoint.host &&
        account.endpoint.port == endpoint.port) {
      account.parked = parked;
      account.warmth.warm = true;
      last_login = account.warmth.last_login;
      keep = true;
    }
  }
  if (!keep) {
    co_await close_parked_stream(*parked->stream, true);
    co_return;
  }
  const auto retire = retire_at(policy, parked->stamp, last_login);
  spdlog::info("prewarm: account={} warm connection ready (token from {}), retired in {} s", email,
               storage::to_string(source), seconds_left(retire));
  parked->timer.expires_at(retire);
  parked->timer.async_wait([parked](boost::system::error_code ec) {
    if (!ec) {
      retire_parked(*parked, "retired before the server's idle limit or its token's end");
    }
  });
  co_await watch(parked);
}

awaitable<void> UpstreamPool::watch(const std::shared_ptr<Parked>& parked) {
  Parked& p = *parked;
  if (co_await watch_parked(p)) {
    co_return;  // a login has it
  }
  unpark(parked, p.server_closed);
  spdlog::info("prewarm: account={} warm connection closed: {}", p.email, p.why);
  co_await close_parked_stream(*p.stream, !p.server_closed);
  maybe_warm(p.email);  // a retired one is replaced while the account is still wanted
}

void UpstreamPool::unpark(const std::shared_ptr<Parked>& parked, bool failed) {
  std::lock_guard lock(mutex_);
  auto it = accounts_.find(parked->email);
  if (it == accounts_.end()) {
    return;
  }
  if (it->second.parked == parked) {
    it->second.parked.reset();
    it->second.warmth.warm = false;
  }
  if (failed) {
    it->second.warmth.last_failure = PrewarmClock::now();
  }
}

void UpstreamPool::stop() {
  std::vector<std::shared_ptr<Parked>> all;
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    for (auto& [email, account] : accounts_) {
      if (account.parked) {
        all.push_back(std::move(account.parked));
        account.warmth.warm = false;
      }
    }
  }
  for (const auto& parked : all) {
    close_parked(parked, "shutdown");
  }
}

}  // namespace iop::proxy
