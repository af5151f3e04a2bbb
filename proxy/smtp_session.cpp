#include "proxy/smtp_session.hpp"

#include <spdlog/spdlog.h>

#include "common/blocking.hpp"
#include "common/clock.hpp"
#include "common/sanitize.hpp"
#include "proxy/relay.hpp"
#include "proxy/smtp_server_machine.hpp"
#include "proxy/smtp_upstream.hpp"

namespace iop::proxy {

std::vector<smtp::Extension> SmtpExtensionCache::get() const {
  std::lock_guard lock(mutex_);
  return extensions_;
}

void SmtpExtensionCache::set(std::vector<smtp::Extension> extensions) {
  std::lock_guard lock(mutex_);
  extensions_ = std::move(extensions);
}

SmtpEndpoint smtp_upstream_for(const auth::LocalAuthOutcome& account,
                               const ProxySettings& settings) {
  if (auto it = settings.provider_smtp.find(account.provider); it != settings.provider_smtp.end()) {
    return it->second;
  }
  return settings.default_smtp;
}

namespace {

using storage::ConnectionOutcome;
using Clock = std::chrono::steady_clock;

// What one AUTH produced: the outcome for the machine, the upstream connection when it worked,
// and what goes into the connection log.
struct AuthAttempt {
  smtp::AuthOutcome outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::bad_credentials);
  std::unique_ptr<ImapStream> upstream;
  std::string upstream_pending;
  ConnectionOutcome audit_outcome = ConnectionOutcome::auth_failed;
  storage::TokenSource token_source = storage::TokenSource::none;
  std::string account;
  std::string detail;
  bool retry_with_refresh = false;
};

class SmtpSession : public std::enable_shared_from_this<SmtpSession> {
 public:
  SmtpSession(SessionDeps deps, ListenerInfo listener, std::string id, tcp::socket socket)
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
      loopback_ = remote.address().is_loopback();
    }
    record_.outcome = ConnectionOutcome::protocol_error;
  }

  awaitable<void> reject() {
    arm_preauth_timer();
    boost::system::error_code ec;
    if (listener_.implicit_tls) {
      co_await client_.accept_tls(ec);
    }
    if (!ec) {
      co_await send(smtp::format_reply(421, "4.7.0 Too many connections, try again later"));
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
    co_await preauth_and_login();
    preauth_timer_.cancel();
    if (upstream_) {
      record_.outcome = ConnectionOutcome::ok;
      const auto result = co_await relay(client_, *upstream_, deps_.settings.smtp_idle_timeout);
      record_.bytes_client_to_upstream += static_cast<std::int64_t>(result.client_to_upstream);
      record_.bytes_upstream_to_client += static_cast<std::int64_t>(result.upstream_to_client);
      record_.close_reason = result.close_reason;
      if (result.idle_timeout) {
        record_.outcome = ConnectionOutcome::timeout;
      }
    } else {
      if (preauth_timed_out_) {
        record_.outcome = ConnectionOutcome::timeout;
        record_.close_reason = "pre-auth timeout";
      }
      co_await client_.shutdown(std::chrono::seconds(1));
    }
    if (closed_by_shutdown_) {
      record_.outcome = ConnectionOutcome::shutdown;
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
    // A named job, not a temporary inside the co_await (GCC PR 100611; see session.cpp).
    auto job = [audit = deps_.audit, record = record_] { return audit->append(record); };
    const auto written = co_await run_on_pool(deps_.blocking, std::move(job));
    if (!written) {
      spdlog::error("conn={} connection log write failed: {}", id_, written.error());
    }
  }

  storage::ConnectionRecord& record() { return record_; }

 private:
  // One deadline from accept for everything before the relay; a login in progress is not cut.
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

  awaitable<bool> preauth_and_login() {
    if (listener_.implicit_tls) {
      boost::system::error_code ec;
      co_await client_.accept_tls(ec);
      if (ec) {
        record_.close_reason = fmt::format("TLS handshake failed: {}", ec.message());
        co_return false;
      }
    }
    smtp::ServerOptions options;
    options.hostname = deps_.settings.hostname;
    options.tls_active = listener_.implicit_tls;
    options.starttls_available = !listener_.implicit_tls;
    options.allow_plaintext_auth = deps_.settings.allow_plaintext_loopback && loopback_;
    if (deps_.smtp_extensions != nullptr) {
      options.upstream_extensions = deps_.smtp_extensions->get();
    }
    smtp::ServerMachine machine(std::move(options));
    std::vector<smtp::Action> actions = machine.start();
    std::vector<char> buffer(4096);
    for (;;) {
      if (actions.empty()) {
        boost::system::error_code ec;
        const auto n = co_await client_.read_some(net::buffer(buffer), ec);
        if (ec) {
          record_.close_reason = is_normal_close(ec)
                                     ? "client closed before AUTH"
                                     : fmt::format("client error: {}", ec.message());
          if (record_.username.empty() && is_normal_close(ec) && machine.errors() == 0) {
            record_.outcome = ConnectionOutcome::ok;
          }
          co_return false;
        }
        actions = machine.feed(std::string_view(buffer.data(), n));
        continue;
      }
      std::vector<smtp::Action> next;
      for (auto& action : actions) {
        if (auto* s = std::get_if<smtp::Send>(&action)) {
          if (!co_await send(s->bytes)) {
            record_.close_reason = "client went away";
            co_return false;
          }
        } else if (std::holds_alternative<smtp::StartTls>(action)) {
          boost::system::error_code ec;
          co_await client_.accept_tls(ec);
          if (ec) {
            record_.close_reason = fmt::format("STARTTLS handshake failed: {}", ec.message());
            co_return false;
          }
          next = machine.on_tls_started();
          break;
        } else if (auto* check = std::get_if<smtp::CheckCredentials>(&action)) {
          record_.username = sanitize_for_log(check->username);
          preauth_timer_.cancel();
          ++preauth_generation_;
          auto attempt = co_await login(std::move(check->username), std::move(check->password),
                                        std::move(check->client_name));
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
          next = machine.on_auth_result(std::move(attempt.outcome));
          break;
        } else if (auto* done = std::get_if<smtp::Authenticated>(&action)) {
          if (!upstream_pending_.empty()) {
            if (!co_await send(upstream_pending_)) {
              record_.close_reason = "client went away";
              co_return false;
            }
            record_.bytes_upstream_to_client += static_cast<std::int64_t>(upstream_pending_.size());
          }
          if (!done->pending.empty()) {
            boost::system::error_code ec;
            co_await upstream_->write_all(net::buffer(done->pending), ec);
            record_.bytes_client_to_upstream += static_cast<std::int64_t>(done->pending.size());
          }
          co_return true;
        } else if (auto* close = std::get_if<smtp::Close>(&action)) {
          if (close->reason == smtp::CloseReason::quit && record_.username.empty()) {
            record_.outcome = ConnectionOutcome::ok;
          } else if (close->reason == smtp::CloseReason::protocol_error ||
                     close->reason == smtp::CloseReason::too_many_commands) {
            record_.outcome = ConnectionOutcome::protocol_error;
          }
          if (record_.close_reason.empty()) {
            record_.close_reason =
                close->reason == smtp::CloseReason::quit ? "client quit" : "closed before AUTH";
          }
          upstream_.reset();
          co_return false;
        }
      }
      actions = std::move(next);
    }
  }

  awaitable<AuthAttempt> login(std::string username, Secret password, std::string client_name) {
    AuthAttempt attempt;
    std::string user = username;
    std::string address = record_.client_address;
    auto local =
        co_await deps_.local_auth.check(std::move(user), std::move(password), std::move(address));
    if (local.result != auth::LocalAuthResult::ok) {
      const bool unavailable = local.result == auth::LocalAuthResult::unavailable;
      attempt.audit_outcome =
          unavailable ? ConnectionOutcome::upstream_unavailable : ConnectionOutcome::auth_failed;
      attempt.outcome = unavailable ? smtp::AuthOutcome::failed(smtp::AuthFailure::temporary,
                                                                "Credentials database unavailable")
                                    : smtp::AuthOutcome::failed(smtp::AuthFailure::bad_credentials);
      attempt.detail = local.result == auth::LocalAuthResult::rate_limited
                           ? "too many failed logins from this address"
                           : "local authentication failed";
      spdlog::info("conn={} AUTH refused for {}: {}", id_, sanitize_for_log(username),
                   attempt.detail);
      co_return attempt;
    }
    attempt.account = local.email;
    const SmtpEndpoint endpoint = smtp_upstream_for(local, deps_.settings);
    auto first = co_await upstream_login(local, endpoint, client_name, false);
    if (!first.retry_with_refresh) {
      co_return first;
    }
    // A token the server refuses may have been revoked early: refresh once and retry.
    deps_.tokens.forget(local.email);
    auto second = co_await upstream_login(local, endpoint, client_name, true);
    if (second.audit_outcome == ConnectionOutcome::auth_failed) {
      // A fresh token refused as well: most often an account authorized before sending was
      // enabled, whose token lacks the SMTP scope.
      second.outcome = smtp::AuthOutcome::failed(
          smtp::AuthFailure::bad_credentials,
          fmt::format("Upstream refused the account's token; if it was authorized before sending "
                      "was enabled, run 'imap-oauth2-proxy account reauth {}'",
                      local.email));
    }
    co_return second;
  }

  // Parameters are references (GCC 12, see session.cpp).
  awaitable<AuthAttempt> upstream_login(const auth::LocalAuthOutcome& local,
                                        const SmtpEndpoint& endpoint,
                                        const std::string& client_name, bool force_refresh) {
    AuthAttempt attempt;
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
          attempt.outcome = smtp::AuthOutcome::failed(
              smtp::AuthFailure::needs_reauth,
              fmt::format(
                  "Account needs re-authorization: run 'imap-oauth2-proxy account reauth {}'",
                  local.email));
          break;
        case Errc::endpoint_unavailable:
        case Errc::storage_unavailable:
          attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
          attempt.outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::temporary,
                                                      "Token service temporarily unavailable");
          break;
        default:
          attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
          attempt.outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::temporary,
                                                      "Cannot get a token for this account");
      }
      spdlog::warn("conn={} account={} no token: {}", id_, local.email,
                   sanitize_for_log(e.message, storage::max_audit_text_bytes));
      co_return attempt;
    }
    attempt.token_source = token->source;
    SmtpEndpoint target = endpoint;
    std::string ehlo = client_name;
    std::string user_name = local.email;
    Secret secret = token->secret;
    auto upstream = co_await connect_smtp_upstream(
        deps_.upstream_tls, std::move(target), std::move(ehlo), std::move(user_name),
        std::move(secret), token->is_password, deps_.settings.upstream.timeout);
    if (upstream) {
      if (deps_.smtp_extensions != nullptr) {
        deps_.smtp_extensions->set(upstream->extensions);
      }
      attempt.upstream = std::move(upstream->stream);
      attempt.upstream_pending = std::move(upstream->pending);
      attempt.audit_outcome = ConnectionOutcome::ok;
      attempt.outcome = smtp::AuthOutcome::success();
      spdlog::info("conn={} account={} authenticated upstream {}:{} (token from {})", id_,
                   local.email, endpoint.host, endpoint.port, storage::to_string(token->source));
      co_return attempt;
    }
    const UpstreamError error = upstream.error();
    attempt.detail = error.detail;
    spdlog::warn("conn={} account={} upstream AUTH failed ({}): {}", id_, local.email,
                 to_string(error.kind), error.detail);
    switch (error.kind) {
      case UpstreamFailure::unavailable:
        attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
        attempt.outcome = smtp::AuthOutcome::failed(
            smtp::AuthFailure::upstream_unavailable,
            fmt::format("Upstream server {}:{} unavailable, try again later", endpoint.host,
                        endpoint.port));
        break;
      case UpstreamFailure::auth_rejected:
      case UpstreamFailure::not_connected:
        attempt.audit_outcome = ConnectionOutcome::auth_failed;
        attempt.outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::bad_credentials,
                                                    "Upstream refused the login");
        attempt.retry_with_refresh = !token->is_password && !force_refresh;
        break;
      case UpstreamFailure::protocol:
        attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
        attempt.outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::upstream_unavailable,
                                                    "Upstream protocol error");
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
  std::optional<Clock::time_point> preauth_deadline_;
  std::uint64_t preauth_generation_ = 0;
  storage::ConnectionRecord record_;
  bool loopback_ = false;
  bool preauth_timed_out_ = false;
  bool closed_by_shutdown_ = false;
};

}  // namespace

awaitable<void> run_smtp_session(tcp::socket socket, SessionDeps deps, ListenerInfo listener,
                                 std::string conn_id, bool reject) {
  auto session =
      std::make_shared<SmtpSession>(deps, std::move(listener), conn_id, std::move(socket));
  const auto executor = co_await net::this_coro::executor;
  deps.registry.add(conn_id, [executor, weak = std::weak_ptr<SmtpSession>(session)] {
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
