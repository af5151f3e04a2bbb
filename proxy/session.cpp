#include "proxy/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/ascii.hpp"
#include "common/blocking.hpp"
#include "common/clock.hpp"
#include "common/sanitize.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/preauth_machine.hpp"
#include "proxy/relay.hpp"

namespace iop::proxy {

void SessionRegistry::add(const std::string& id, std::function<void()> close) {
  std::lock_guard lock(mutex_);
  sessions_[id] = std::move(close);
}

void SessionRegistry::remove(const std::string& id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(id);
}

std::size_t SessionRegistry::size() {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

void SessionRegistry::close_all() {
  std::map<std::string, std::function<void()>> all;
  {
    std::lock_guard lock(mutex_);
    all = sessions_;
  }
  for (auto& [id, close] : all) {
    close();
  }
}

UpstreamEndpoint upstream_for(const auth::LocalAuthOutcome& account,
                              const ProxySettings& settings) {
  if (!account.upstream_host.empty()) {
    return {account.upstream_host, account.upstream_port > 0 ? account.upstream_port : 993};
  }
  if (auto it = settings.provider_upstreams.find(account.provider);
      it != settings.provider_upstreams.end()) {
    return it->second;
  }
  return settings.default_upstream;
}

std::vector<std::string> visible_capabilities(
    const std::vector<std::string>& caps, const std::string& email,
    const std::map<std::string, std::vector<std::string>>& hide) {
  auto hidden = [&](const std::string& cap) {
    for (const auto& key : {std::string("*"), email}) {
      auto it = hide.find(key);
      if (it == hide.end()) {
        continue;
      }
      for (const auto& h : it->second) {
        if (ascii_iequals(h, cap)) {
          return true;
        }
      }
    }
    return false;
  };
  std::vector<std::string> out;
  for (const auto& cap : caps) {
    if (!hidden(cap)) {
      out.push_back(cap);
    }
  }
  return out;
}

namespace {

using storage::ConnectionOutcome;
using Clock = std::chrono::steady_clock;

bool is_loopback(const tcp::endpoint& ep) { return ep.address().is_loopback(); }

// What one login attempt produced: the outcome for the state machine, the upstream connection
// when it worked, and what goes into the connection log.
struct LoginAttempt {
  LoginOutcome outcome = LoginOutcome::failed(LoginFailure::auth_failed);
  std::unique_ptr<ImapStream> upstream;
  std::string upstream_pending;  // server bytes read after the login, owed to the client
  ConnectionOutcome audit_outcome = ConnectionOutcome::auth_failed;
  storage::TokenSource token_source = storage::TokenSource::none;
  std::string account;
  std::string detail;
  bool retry_with_refresh = false;  // the upstream refused a token: worth one forced refresh
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(SessionDeps deps, ListenerInfo listener, std::string id, tcp::socket socket)
      : deps_(deps),
        listener_(std::move(listener)),
        id_(std::move(id)),
        client_(std::move(socket), deps.server_tls),
        preauth_timer_(client_.socket().get_executor()) {
    boost::system::error_code ec;
    const auto remote = client_.socket().remote_endpoint(ec);
    record_.started_at_ms = to_unix_millis(std::chrono::system_clock::now());
    record_.listener = listener_.name;
    if (!ec) {
      record_.client_address = remote.address().to_string();
      record_.client_port = remote.port();
      loopback_ = is_loopback(remote);
    }
    record_.outcome = ConnectionOutcome::protocol_error;
  }

  // Over capacity: a TLS handshake (on the implicit-TLS port) and a BYE, nothing more.
  awaitable<void> reject() {
    arm_preauth_timer();
    boost::system::error_code ec;
    if (listener_.implicit_tls) {
      co_await client_.accept_tls(ec);
    }
    if (!ec) {
      co_await send("* BYE [UNAVAILABLE] Too many connections, try again later\r\n");
    }
    preauth_timer_.cancel();
    co_await client_.shutdown(std::chrono::seconds(1));
    record_.outcome = ConnectionOutcome::rejected;
    record_.close_reason = "max_connections reached";
    record_.ended_at_ms = to_unix_millis(std::chrono::system_clock::now());
    spdlog::warn("conn={} rejected: max_connections ({}) reached", id_,
                 deps_.settings.max_connections);
    co_await write_audit();
  }

  awaitable<void> run() {
    const auto started = Clock::now();
    arm_preauth_timer();
    // On success upstream_ is set; every other path has already filled in the record.
    co_await preauth_and_login();
    if (upstream_) {
      preauth_timer_.cancel();
      record_.outcome = ConnectionOutcome::ok;
      const auto result = co_await relay(client_, *upstream_, deps_.settings.idle_timeout);
      record_.bytes_client_to_upstream += static_cast<std::int64_t>(result.client_to_upstream);
      record_.bytes_upstream_to_client += static_cast<std::int64_t>(result.upstream_to_client);
      record_.close_reason = result.close_reason;
      if (result.idle_timeout) {
        record_.outcome = ConnectionOutcome::timeout;
      }
      if (closed_by_shutdown_) {
        record_.outcome = ConnectionOutcome::shutdown;
      }
    } else {
      preauth_timer_.cancel();
      if (preauth_timed_out_) {
        record_.outcome = ConnectionOutcome::timeout;
        record_.close_reason = "pre-auth timeout";
      } else if (closed_by_shutdown_) {
        record_.outcome = ConnectionOutcome::shutdown;
      }
      co_await client_.shutdown(std::chrono::seconds(1));
    }
    record_.ended_at_ms = to_unix_millis(std::chrono::system_clock::now());
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    spdlog::info(
        "conn={} closed: outcome={} account={} client={}:{} token={} bytes_in={} bytes_out={} "
        "duration={}ms reason=\"{}\"",
        id_, storage::to_string(record_.outcome), record_.account.empty() ? "-" : record_.account,
        record_.client_address, record_.client_port, storage::to_string(record_.token_source),
        record_.bytes_client_to_upstream, record_.bytes_upstream_to_client, ms.count(),
        sanitize_for_log(record_.close_reason, storage::max_audit_text_bytes));
    co_await write_audit();
  }

  // Closes the client connection (from the registry, on the session's strand).
  void close_now() {
    closed_by_shutdown_ = true;
    client_.cancel();
    client_.close();
    if (upstream_) {
      upstream_->cancel();
      upstream_->close();
    }
  }

  void fail_internal(std::string_view what) {
    record_.outcome = ConnectionOutcome::internal_error;
    record_.close_reason = std::string(what);
  }

  awaitable<void> write_audit() {
    if (deps_.audit == nullptr) {
      co_return;
    }
    // A named job, not a temporary inside the co_await: GCC 12 destroys some temporaries of a
    // co_await expression twice (GCC PR 100611), fatal for captures that own memory.
    auto job = [audit = deps_.audit, record = record_] { return audit->append(record); };
    const auto written = co_await run_on_pool(deps_.blocking, std::move(job));
    if (!written) {
      spdlog::error("conn={} connection log write failed: {}", id_, written.error());
    }
  }

  storage::ConnectionRecord& record() { return record_; }

 private:
  // Arms the pre-auth timer for the deadline set at the first call (accept), never later.
  void arm_preauth_timer() {
    if (!preauth_deadline_) {
      preauth_deadline_ = Clock::now() + deps_.settings.preauth_timeout;
    }
    preauth_timer_.expires_at(*preauth_deadline_);
    const auto generation = ++preauth_generation_;
    preauth_timer_.async_wait([weak = weak_from_this(), generation](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!ec && self && !self->upstream_ && generation == self->preauth_generation_) {
        self->preauth_timed_out_ = true;
        self->client_.cancel();
        self->client_.close();
      }
    });
  }

  awaitable<bool> send(std::string_view bytes) {
    boost::system::error_code ec;
    co_await client_.write_all(net::buffer(bytes.data(), bytes.size()), ec);
    co_return !ec;
  }

  // Runs the pre-auth exchange; on success upstream_ is set and the client has its tagged OK.
  awaitable<bool> preauth_and_login() {
    if (listener_.implicit_tls) {
      boost::system::error_code ec;
      co_await client_.accept_tls(ec);
      if (ec) {
        record_.close_reason = fmt::format("TLS handshake failed: {}", ec.message());
        spdlog::debug("conn={} {}", id_, record_.close_reason);
        co_return false;
      }
    }
    PreauthOptions options;
    options.tls_active = listener_.implicit_tls;
    options.starttls_available = !listener_.implicit_tls;
    options.allow_plaintext_login = deps_.settings.allow_plaintext_loopback && loopback_;
    PreauthMachine machine(options);
    std::vector<Action> actions = machine.start();
    std::vector<char> buffer(4096);
    for (;;) {
      if (actions.empty()) {
        boost::system::error_code ec;
        const auto n = co_await client_.read_some(net::buffer(buffer), ec);
        if (ec) {
          record_.close_reason = is_normal_close(ec)
                                     ? "client closed before login"
                                     : fmt::format("client error: {}", ec.message());
          // A client that only looked (CAPABILITY, NOOP) and hung up ended normally; one that
          // got a BAD first keeps the protocol_error it started with.
          if (record_.username.empty() && record_.outcome == ConnectionOutcome::protocol_error &&
              is_normal_close(ec) && machine.errors() == 0) {
            record_.outcome = ConnectionOutcome::ok;
          }
          co_return false;
        }
        actions = machine.feed(std::string_view(buffer.data(), n));
        continue;
      }
      std::vector<Action> next;
      for (auto& action : actions) {
        if (auto* s = std::get_if<Send>(&action)) {
          if (!co_await send(s->bytes)) {
            record_.close_reason = "client went away";
            co_return false;
          }
        } else if (std::holds_alternative<StartTls>(action)) {
          boost::system::error_code ec;
          co_await client_.accept_tls(ec);
          if (ec) {
            record_.close_reason = fmt::format("STARTTLS handshake failed: {}", ec.message());
            co_return false;
          }
          next = machine.on_tls_started();
          break;
        } else if (auto* check = std::get_if<CheckCredentials>(&action)) {
          // What the client typed as its name: sanitized (no forged log lines) and cut short (a
          // password typed into the user field is not logged whole).
          record_.username = sanitize_for_log(check->username);
          // The login has its own deadlines (token endpoint, upstream), so the pre-auth timer
          // does not interrupt it; after a failed login it is armed again for what is left of
          // the one deadline counted from accept (already passed: the connection closes now).
          // Restarting it instead let a client hold a connection max_failed_logins times over.
          preauth_timer_.cancel();
          ++preauth_generation_;  // even an expiry already queued must not close us mid-login
          // Moved, never copied, into coroutine arguments: see write_audit().
          auto attempt = co_await login(std::move(check->username), std::move(check->password));
          if (!attempt.upstream) {
            arm_preauth_timer();
          }
          record_.outcome = attempt.audit_outcome;
          record_.token_source = attempt.token_source;
          record_.account = attempt.account;
          if (!attempt.detail.empty()) {
            record_.close_reason = attempt.detail;
          }
          upstream_ = std::move(attempt.upstream);
          upstream_pending_ = std::move(attempt.upstream_pending);
          next = machine.on_login_result(std::move(attempt.outcome));
          break;
        } else if (auto* done = std::get_if<Authenticated>(&action)) {
          if (!upstream_pending_.empty()) {
            // What the server said right after the login, after our tagged OK: byte-exact.
            if (!co_await send(upstream_pending_)) {
              record_.close_reason = "client went away";
              co_return false;
            }
            record_.bytes_upstream_to_client += static_cast<std::int64_t>(upstream_pending_.size());
          }
          if (!done->pending.empty()) {
            // Commands the client pipelined after its login go upstream first.
            boost::system::error_code ec;
            co_await upstream_->write_all(net::buffer(done->pending), ec);
            record_.bytes_client_to_upstream += static_cast<std::int64_t>(done->pending.size());
          }
          co_return true;
        } else if (auto* close = std::get_if<Close>(&action)) {
          if (close->reason == CloseReason::logout && record_.username.empty()) {
            record_.outcome = ConnectionOutcome::ok;
          } else if (close->reason == CloseReason::protocol_error ||
                     close->reason == CloseReason::too_many_commands) {
            record_.outcome = ConnectionOutcome::protocol_error;
          }
          if (record_.close_reason.empty()) {
            record_.close_reason =
                close->reason == CloseReason::logout ? "client logged out" : "closed before login";
          }
          upstream_.reset();
          co_return false;
        }
      }
      actions = std::move(next);
    }
  }

  awaitable<LoginAttempt> login(std::string username, Secret password) {
    LoginAttempt attempt;
    std::string user = username;
    std::string address = record_.client_address;
    auto local =
        co_await deps_.local_auth.check(std::move(user), std::move(password), std::move(address));
    if (local.result != auth::LocalAuthResult::ok) {
      attempt.audit_outcome = local.result == auth::LocalAuthResult::unavailable
                                  ? ConnectionOutcome::upstream_unavailable
                                  : ConnectionOutcome::auth_failed;
      attempt.outcome = local.result == auth::LocalAuthResult::unavailable
                            ? LoginOutcome::failed(LoginFailure::upstream_unavailable,
                                                   "Credentials database unavailable")
                            : LoginOutcome::failed(LoginFailure::auth_failed);
      attempt.detail = local.result == auth::LocalAuthResult::rate_limited
                           ? "too many failed logins from this address"
                           : "local authentication failed";
      spdlog::info("conn={} login refused for {}: {}", id_, sanitize_for_log(username),
                   attempt.detail);
      co_return attempt;
    }
    attempt.account = local.email;
    const UpstreamEndpoint endpoint = upstream_for(local, deps_.settings);

    auto first = co_await upstream_login(local, endpoint, false);
    if (!first.retry_with_refresh) {
      co_return first;
    }
    // A token the server refuses may have been revoked early: refresh once and retry.
    deps_.tokens.forget(local.email);
    auto second = co_await upstream_login(local, endpoint, true);
    co_return second;
  }

  // One token + upstream login. Parameters are references: the caller awaits, and GCC 12
  // mishandles owning by-value coroutine arguments (see write_audit()).
  awaitable<LoginAttempt> upstream_login(const auth::LocalAuthOutcome& local,
                                         const UpstreamEndpoint& endpoint, bool force_refresh) {
    LoginAttempt attempt;
    attempt.account = local.email;
    std::string email = local.email;
    Result<auth::FreshToken> token = fail(Errc::internal, "no token");
    if (force_refresh) {
      token = co_await deps_.tokens.refresh_now(std::move(email));
    } else {
      token = co_await deps_.tokens.ensure_fresh_token(std::move(email));
    }
    if (!token) {
      const auto& e = token.error();
      attempt.detail = e.message;
      switch (e.code) {
        case Errc::needs_reauth:
          attempt.audit_outcome = ConnectionOutcome::needs_reauth;
          attempt.outcome = LoginOutcome::failed(
              LoginFailure::needs_reauth,
              fmt::format(
                  "account needs re-authorization: run 'imap-oauth2-proxy account reauth {}'",
                  local.email));
          break;
        case Errc::endpoint_unavailable:
        case Errc::storage_unavailable:
          attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
          attempt.outcome = LoginOutcome::failed(LoginFailure::upstream_unavailable,
                                                 "Token service temporarily unavailable");
          break;
        default:
          attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
          attempt.outcome =
              LoginOutcome::failed(LoginFailure::other, "Cannot get a token for this account");
      }
      // The message may quote the token endpoint's error_description (it holds CRLFs).
      spdlog::warn("conn={} account={} no token: {}", id_, local.email,
                   sanitize_for_log(e.message, storage::max_audit_text_bytes));
      co_return attempt;
    }
    attempt.token_source = token->source;
    UpstreamEndpoint target = endpoint;
    std::string user_name = local.email;
    Secret secret = token->secret;
    auto upstream =
        co_await connect_upstream(deps_.upstream_tls, std::move(target), std::move(user_name),
                                  std::move(secret), token->is_password, deps_.settings.upstream);
    if (upstream) {
      attempt.upstream = std::move(upstream->stream);
      attempt.upstream_pending = std::move(upstream->pending);
      attempt.audit_outcome = ConnectionOutcome::ok;
      attempt.outcome = LoginOutcome::success(visible_capabilities(
          upstream->capabilities, local.email, deps_.settings.hide_capabilities));
      spdlog::info("conn={} account={} logged in upstream {}:{} (token from {})", id_, local.email,
                   endpoint.host, endpoint.port, storage::to_string(token->source));
      co_return attempt;
    }
    const UpstreamError error = upstream.error();
    attempt.detail = error.detail;
    spdlog::warn("conn={} account={} upstream login failed ({}): {}", id_, local.email,
                 to_string(error.kind), error.detail);
    switch (error.kind) {
      case UpstreamFailure::unavailable:
        attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
        attempt.outcome =
            LoginOutcome::failed(LoginFailure::upstream_unavailable, "Upstream server unavailable");
        break;
      case UpstreamFailure::not_connected:
        attempt.audit_outcome = ConnectionOutcome::auth_failed;
        attempt.outcome = LoginOutcome::failed(
            LoginFailure::auth_failed,
            "Upstream accepted the login but not the session (User is authenticated but not "
            "connected): check the account's mailbox and permissions");
        break;
      case UpstreamFailure::auth_rejected:
        attempt.audit_outcome = ConnectionOutcome::auth_failed;
        attempt.outcome =
            LoginOutcome::failed(LoginFailure::auth_failed, "Upstream refused the login");
        attempt.retry_with_refresh = !token->is_password && !force_refresh;
        break;
      case UpstreamFailure::protocol:
        attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
        attempt.outcome =
            LoginOutcome::failed(LoginFailure::upstream_unavailable, "Upstream protocol error");
        break;
    }
    co_return attempt;
  }

  SessionDeps deps_;
  ListenerInfo listener_;
  std::string id_;
  ImapStream client_;
  std::unique_ptr<ImapStream> upstream_;
  std::string upstream_pending_;
  net::steady_timer preauth_timer_;
  std::optional<Clock::time_point> preauth_deadline_;  // from accept; set by arm_preauth_timer()
  std::uint64_t preauth_generation_ = 0;  // a fired-but-queued timer of an older arming is void
  storage::ConnectionRecord record_;
  bool loopback_ = false;
  bool preauth_timed_out_ = false;
  bool closed_by_shutdown_ = false;
};

}  // namespace

awaitable<void> run_session(tcp::socket socket, SessionDeps deps, ListenerInfo listener,
                            std::string conn_id, bool reject) {
  auto session = std::make_shared<Session>(deps, std::move(listener), conn_id, std::move(socket));
  const auto executor = co_await net::this_coro::executor;
  deps.registry.add(conn_id, [executor, weak = std::weak_ptr<Session>(session)] {
    net::post(executor, [weak] {
      if (auto s = weak.lock()) {
        s->close_now();
      }
    });
  });
  struct Unregister {
    SessionRegistry& registry;
    std::string id;
    ~Unregister() { registry.remove(id); }
  } unregister{deps.registry, conn_id};
  std::exception_ptr failure;
  try {
    if (reject) {
      co_await session->reject();
    } else {
      co_await session->run();
    }
  } catch (const std::exception& e) {
    spdlog::error("conn={} internal error: {}", conn_id, e.what());
    session->fail_internal(e.what());
    failure = std::current_exception();
  }
  if (failure) {
    session->record().ended_at_ms = to_unix_millis(std::chrono::system_clock::now());
    co_await session->write_audit();
  }
}

}  // namespace iop::proxy
