#include "proxy/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/ascii.hpp"
#include "common/sanitize.hpp"
#include "proxy/connection.hpp"
#include "proxy/imap_stream.hpp"
#include "proxy/preauth_machine.hpp"
#include "proxy/prewarm.hpp"

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

// The IMAP side of a Connection: PreauthMachine's actions, and the login with its answers.
class Session {
 public:
  explicit Session(std::shared_ptr<Connection> connection)
      : c_(std::move(connection)), deps_(c_->deps()), id_(c_->id()) {}

  [[nodiscard]] const std::shared_ptr<Connection>& connection() const { return c_; }

  // Over capacity: a TLS handshake (on the implicit-TLS port) and a BYE, nothing more.
  awaitable<void> reject() {
    co_await c_->reject("* BYE [UNAVAILABLE] Too many connections, try again later\r\n");
  }

  awaitable<void> run() {
    c_->arm_preauth_timer();
    // On success the connection's upstream is set; every other path has filled in the record.
    co_await preauth_and_login();
    co_await c_->finish(deps_.settings.idle_timeout);
  }

 private:
  // Runs the pre-auth exchange; on success the upstream is set and the client has its OK.
  awaitable<bool> preauth_and_login() {
    auto& record = c_->record();
    if (c_->listener().implicit_tls) {
      // Not inside the condition: GCC 12 mishandles co_await in some compound expressions.
      const bool tls = co_await c_->accept_tls("TLS");
      if (!tls) {
        co_return false;
      }
    }
    PreauthOptions options;
    options.tls_active = c_->listener().implicit_tls;
    options.starttls_available = !c_->listener().implicit_tls;
    options.allow_plaintext_login = deps_.settings.allow_plaintext_loopback && c_->loopback();
    PreauthMachine machine(options);
    std::vector<Action> actions = machine.start();
    std::vector<char> buffer(4096);
    for (;;) {
      if (actions.empty()) {
        if (c_->preauth_timed_out()) {
          co_return false;  // finish() records the timeout
        }
        boost::system::error_code ec;
        const auto n = co_await c_->client().read_some(net::buffer(buffer), ec);
        if (ec && (c_->preauth_timed_out() || c_->closed_by_shutdown())) {
          co_return false;  // the connection closed it, and records why
        }
        if (ec) {
          note_refused_authorization(record, machine.authorization_refusals());
          add_close_reason(record, is_normal_close(ec)
                                       ? "client closed before login"
                                       : fmt::format("client error: {}", ec.message()));
          // A client that only looked (CAPABILITY, NOOP) and hung up ended normally; one that
          // got a BAD first keeps the protocol_error it started with.
          if (record.username.empty() && record.outcome == ConnectionOutcome::protocol_error &&
              is_normal_close(ec) && machine.errors() == 0) {
            record.outcome = ConnectionOutcome::ok;
          }
          co_return false;
        }
        actions = machine.feed(std::string_view(buffer.data(), n));
        continue;
      }
      std::vector<Action> next;
      for (auto& action : actions) {
        if (auto* s = std::get_if<Send>(&action)) {
          const bool sent = co_await c_->send(s->bytes);
          if (!sent) {
            co_return false;
          }
        } else if (std::holds_alternative<StartTls>(action)) {
          const bool tls = co_await c_->accept_tls("STARTTLS");
          if (!tls) {
            co_return false;
          }
          next = machine.on_tls_started();
          break;
        } else if (auto* check = std::get_if<CheckCredentials>(&action)) {
          // What the client typed as its name: sanitized (no forged log lines) and cut short (a
          // password typed into the user field is not logged whole).
          record.username = printable_username(check->username);
          c_->pause_preauth_timer();
          // Moved, never copied, into coroutine arguments (GCC PR 100611).
          auto attempt = co_await login(std::move(check->username), std::move(check->password));
          if (!attempt.upstream) {
            c_->arm_preauth_timer();
          }
          record.outcome = attempt.audit_outcome;
          record.token_source = attempt.token_source;
          record.account = attempt.account;
          if (!attempt.detail.empty()) {
            record.close_reason = attempt.detail;
          }
          c_->upstream() = std::move(attempt.upstream);
          c_->upstream_pending() = std::move(attempt.upstream_pending);
          next = machine.on_login_result(std::move(attempt.outcome));
          break;
        } else if (auto* done = std::get_if<Authenticated>(&action)) {
          const bool forwarded = co_await c_->forward_pending(done->pending);
          co_return forwarded;
        } else if (auto* close = std::get_if<Close>(&action)) {
          if (close->reason == CloseReason::logout && record.username.empty()) {
            record.outcome = ConnectionOutcome::ok;
          } else if (close->reason == CloseReason::protocol_error ||
                     close->reason == CloseReason::too_many_commands) {
            record.outcome = ConnectionOutcome::protocol_error;
          }
          note_refused_authorization(record, machine.authorization_refusals());
          if (close->reason == CloseReason::too_many_login_failures) {
            add_close_reason(record, "too many failed logins");
          } else if (record.close_reason.empty()) {
            record.close_reason =
                close->reason == CloseReason::logout ? "client logged out" : "closed before login";
          }
          c_->upstream().reset();
          co_return false;
        }
      }
      actions = std::move(next);
    }
  }

  awaitable<LoginAttempt> login(std::string username, Secret password) {
    LoginAttempt attempt;
    std::string user = username;
    std::string address = c_->record().client_address;
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
      if (local.account_exists) {
        attempt.account = local.email;  // the log files the refusal under the mailbox it targeted
      }
      spdlog::info("conn={} login refused for {}: {}", id_, printable_username(username),
                   attempt.detail);
      co_return attempt;
    }
    attempt.account = local.email;
    const UpstreamEndpoint endpoint = upstream_for(local, deps_.settings);

    if (deps_.upstreams != nullptr) {
      // The pool ([upstream] prewarm, max_connections_per_account): a warm connection, or a
      // counted fresh login, or a refusal at the account's limit.
      auto checkout = co_await deps_.upstreams->checkout(local.email, endpoint);
      if (checkout.admission == Admission::refused) {
        attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
        attempt.outcome =
            LoginOutcome::failed(LoginFailure::upstream_unavailable, checkout.refusal);
        attempt.detail = checkout.refusal;
        co_return attempt;
      }
      lease_ = std::move(checkout.lease);
      if (checkout.warm) {
        co_return from_warm(std::move(*checkout.warm), local.email);
      }
    }
    auto result = co_await upstream_login(local, endpoint, false);
    if (result.retry_with_refresh) {
      // A token the server refuses may have been revoked early: refresh once and retry.
      deps_.tokens.forget(local.email);
      result = co_await upstream_login(local, endpoint, true);
    }
    if (!result.upstream) {
      lease_.release();
    }
    co_return result;
  }

  // A login answered from a warm connection: the same capabilities (filtered the same way) and
  // the same pending bytes as the fresh login that made it; the connection log says so.
  LoginAttempt from_warm(WarmConnection warm, const std::string& email) {
    LoginAttempt attempt;
    attempt.account = email;
    attempt.upstream = std::move(warm.stream);
    attempt.upstream_pending = std::move(warm.pending);
    attempt.audit_outcome = ConnectionOutcome::ok;
    attempt.token_source = warm.token_source;
    attempt.outcome = LoginOutcome::success(
        visible_capabilities(warm.capabilities, email, deps_.settings.hide_capabilities));
    c_->set_login_note("prewarmed upstream connection");
    spdlog::info("conn={} account={} logged in on a prewarmed upstream connection (token from {})",
                 id_, email, storage::to_string(warm.token_source));
    return attempt;
  }

  // One token + upstream login. Parameters are references: the caller awaits, and GCC 12
  // mishandles owning by-value coroutine arguments (GCC PR 100611, docs/design.md).
  awaitable<LoginAttempt> upstream_login(const auth::LocalAuthOutcome& local,
                                         const UpstreamEndpoint& endpoint, bool force_refresh) {
    LoginAttempt attempt;
    attempt.account = local.email;
    auto token = co_await login_token(deps_.tokens, local.email, force_refresh, id_);
    if (!token.token) {
      attempt.detail = token.token.error().message;
      attempt.audit_outcome = token.audit_outcome;
      switch (token.trouble) {
        case TokenTrouble::needs_reauth:
          attempt.outcome =
              LoginOutcome::failed(LoginFailure::needs_reauth,
                                   "account needs re-authorization: " + reauth_hint(local.email));
          break;
        case TokenTrouble::temporary:
          attempt.outcome = LoginOutcome::failed(LoginFailure::upstream_unavailable,
                                                 "Token service temporarily unavailable");
          break;
        default:
          attempt.outcome =
              LoginOutcome::failed(LoginFailure::other, "Cannot get a token for this account");
      }
      co_return attempt;
    }
    attempt.token_source = token.token->source;
    UpstreamEndpoint target = endpoint;
    std::string user_name = local.email;
    Secret secret = token.token->secret;
    auto upstream = co_await connect_upstream(deps_.upstream_tls, std::move(target),
                                              std::move(user_name), std::move(secret),
                                              token.token->is_password, deps_.settings.upstream);
    if (upstream) {
      attempt.upstream = std::move(upstream->stream);
      attempt.upstream_pending = std::move(upstream->pending);
      attempt.audit_outcome = ConnectionOutcome::ok;
      attempt.outcome = LoginOutcome::success(visible_capabilities(
          upstream->capabilities, local.email, deps_.settings.hide_capabilities));
      spdlog::info("conn={} account={} logged in upstream {}:{} (token from {})", id_, local.email,
                   endpoint.host, endpoint.port, storage::to_string(token.token->source));
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
        attempt.retry_with_refresh = !token.token->is_password && !force_refresh;
        break;
      case UpstreamFailure::protocol:
        attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
        attempt.outcome =
            LoginOutcome::failed(LoginFailure::upstream_unavailable, "Upstream protocol error");
        break;
    }
    co_return attempt;
  }

  std::shared_ptr<Connection> c_;
  SessionDeps deps_;
  std::string id_;
  UpstreamLease lease_;  // counts this session's upstream connection for its account's limit
};

}  // namespace

awaitable<void> run_session(tcp::socket socket, SessionDeps deps, ListenerInfo listener,
                            std::string conn_id, bool reject) {
  auto connection =
      std::make_shared<Connection>(deps, std::move(listener), conn_id, std::move(socket));
  auto session = std::make_shared<Session>(std::move(connection));
  co_await run_registered(std::move(session), std::move(conn_id), reject);
}

}  // namespace iop::proxy
