#pragma once
// The pre-warm pool (issue #9 item 5, `[upstream] prewarm`): for accounts used recently, one
// upstream IMAP connection already logged in, handed to the account's next client login, which
// then costs one local password check and no upstream TLS handshake or XOAUTH2 round trip. The
// pool also counts every account's live upstream connections against
// `[upstream] max_connections_per_account`.
//
// The decisions are in proxy/prewarm_policy.hpp (pure); this file does the I/O:
// - warm-ups run as their own coroutines on the executor of the login that asked for them, never
//   inside a session;
// - a parked connection is a ParkedStream (proxy/parked_stream.hpp): a server close or BYE is
//   noticed and the connection dropped; other bytes the server sends meanwhile are kept for the
//   client (like UpstreamConnection::pending);
// - a parked connection is retired (LOGOUT, TLS close) before its token gets too old for a new
//   session or the server's idle limit (policy.max_idle), and replaced while the account is
//   still wanted.
//
// Thread safety: every public member may be called from any thread. State shared across
// accounts is under one mutex never held across a co_await; a parked connection's own state is
// touched only on its home executor.

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "auth/token_service.hpp"
#include "common/asio.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/parked_stream.hpp"
#include "proxy/prewarm_policy.hpp"
#include "proxy/upstream.hpp"
#include "storage/token_source.hpp"

namespace iop::proxy {

class UpstreamPool;

// One live upstream connection of an account, counted against its limit until destroyed (the
// session holds it for as long as its upstream lives). Movable; an empty lease counts nothing.
class UpstreamLease {
 public:
  UpstreamLease() = default;
  UpstreamLease(std::shared_ptr<UpstreamPool> pool, std::string email);
  UpstreamLease(UpstreamLease&& other) noexcept;
  UpstreamLease& operator=(UpstreamLease&& other) noexcept;
  UpstreamLease(const UpstreamLease&) = delete;
  UpstreamLease& operator=(const UpstreamLease&) = delete;
  ~UpstreamLease();

  // Stops counting now (a login that failed).
  void release();
  [[nodiscard]] bool counted() const { return pool_ != nullptr; }

 private:
  std::shared_ptr<UpstreamPool> pool_;
  std::string email_;
};

// A parked connection, now the session's: authenticated, on the session's executor.
struct WarmConnection {
  std::unique_ptr<ImapStream> stream;
  std::vector<std::string> capabilities;  // the server's post-login capabilities
  std::string pending;  // bytes the server sent after the login, owed to the client first
  storage::TokenSource token_source = storage::TokenSource::none;  // of the token it logged in with
};

// What a client login gets from the pool.
struct Checkout {
  Admission admission = Admission::fresh;
  std::optional<WarmConnection> warm;  // set when admission is take_warm
  UpstreamLease lease;                 // counts this login's upstream; empty when refused
  std::string refusal;                 // when refused: the client's NO text (names the limit)
};

struct UpstreamPoolSettings {
  PrewarmPolicy policy;
  UpstreamOptions upstream;  // for warm-ups: the same timeout and probe as a session's login
};

class UpstreamPool : public std::enable_shared_from_this<UpstreamPool> {
 public:
  // `tokens` and `tls` must outlive the pool and every coroutine it starts (serve: they do).
  static std::shared_ptr<UpstreamPool> create(auth::TokenService& tokens, net::ssl::context& tls,
                                              UpstreamPoolSettings settings);

  // A client login of `email` (local password already checked) that would log in at `endpoint`.
  // Takes the parked connection when there is a usable one (moving it to the calling
  // coroutine's executor), else counts a fresh login, else refuses at the limit; then starts
  // the next warm-up in the background when the policy says so. Suspends only to take a parked
  // connection from its home executor. A parked connection found closing at that moment (the
  // server just ended it) is not used and the login goes fresh (admission fresh, warm empty).
  awaitable<Checkout> checkout(const std::string& email, const UpstreamEndpoint& endpoint);

  // For shutdown: no new warm-ups; every parked connection is logged out and closed on its
  // home executor (TLS close bounded by 1 s); warm-ups still connecting close theirs when done
  // (bounded by the upstream timeout). Does not wait.
  void stop();

  [[nodiscard]] const UpstreamPoolSettings& settings() const { return settings_; }

  // For tests and logs: parked connections right now.
  [[nodiscard]] std::size_t parked();

  struct Parked;  // a parked connection (prewarm.cpp)

  UpstreamPool(auth::TokenService& tokens, net::ssl::context& tls, UpstreamPoolSettings settings);

 private:
  friend class UpstreamLease;

  struct Account {
    AccountWarmth warmth;
    UpstreamEndpoint endpoint;
    std::optional<net::any_io_executor> executor;  // where the last login ran: warm-ups go there
    std::shared_ptr<Parked> parked;
  };

  void release(const std::string& email);
  // Starts a warm-up for `email` when the policy says so (call without the lock).
  void maybe_warm(const std::string& email);
  awaitable<void> warm_up(std::string email, UpstreamEndpoint endpoint);
  // `parked` is the caller's (warm_up's frame outlives the call).
  awaitable<void> watch(const std::shared_ptr<Parked>& parked);
  // Removes `parked` from its account if it is still the one there; `failed` counts as a
  // failure for the back-off (server closed it).
  void unpark(const std::shared_ptr<Parked>& parked, bool failed);
  void warm_up_failed(const std::string& email);

  auth::TokenService& tokens_;
  net::ssl::context& tls_;
  UpstreamPoolSettings settings_;

  std::mutex mutex_;  // guards what follows; never held across a co_await
  std::map<std::string, Account> accounts_;
  bool stopped_ = false;
};

}  // namespace iop::proxy
