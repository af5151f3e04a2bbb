#include "proxy/smtp_session.hpp"

#include <spdlog/spdlog.h>

#include "common/sanitize.hpp"
#include "proxy/connection.hpp"
#include "proxy/smtp_server_machine.hpp"
#include "proxy/smtp_transactions.hpp"
#include "proxy/smtp_upstream.hpp"

namespace iop::proxy {

std::vector<smtp::Extension> SmtpExtensionCache::get() const {
  std::lock_guard lock(mutex_);
  return shared_;
}

void SmtpExtensionCache::set(const std::string& endpoint, std::vector<smtp::Extension> extensions) {
  std::lock_guard lock(mutex_);
  auto& known = by_endpoint_[endpoint];
  if (known == extensions && !known.empty()) {
    return;  // the usual case: the upstream says what it said last time
  }
  known = std::move(extensions);
  std::vector<std::vector<smtp::Extension>> all;
  all.reserve(by_endpoint_.size());
  for (const auto& [name, seen] : by_endpoint_) {
    all.push_back(seen);
  }
  shared_ = smtp::common_extensions(all);
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

// The submission side of a Connection: ServerMachine's actions, and the AUTH with its answers.
class SmtpSession {
 public:
  explicit SmtpSession(std::shared_ptr<Connection> connection)
      : c_(std::move(connection)), deps_(c_->deps()), id_(c_->id()) {}

  [[nodiscard]] const std::shared_ptr<Connection>& connection() const { return c_; }

  awaitable<void> reject() {
    // Named, not a temporary inside the co_await (GCC PR 100611; docs/design.md).
    const std::string refusal =
        smtp::format_reply(421, "4.7.0 Too many connections, try again later");
    co_await c_->reject(refusal);
  }

  awaitable<void> run() {
    c_->arm_preauth_timer();
    // Messages the upstream accepted, for the connection log: followed in the relayed bytes.
    auto counter = std::make_shared<smtp::TransactionCounter>();
    c_->observe(
        [counter](bool upward, std::string_view bytes) {
          if (upward) {
            counter->client_bytes(bytes);
          } else {
            counter->server_bytes(bytes);
          }
        },
        [counter] { return counter->accepted(); });
    co_await preauth_and_login();
    co_await c_->finish(deps_.settings.smtp_idle_timeout);
  }

 private:
  awaitable<bool> preauth_and_login() {
    auto& record = c_->record();
    if (c_->listener().implicit_tls) {
      const bool tls = co_await c_->accept_tls("TLS");
      if (!tls) {
        co_return false;
      }
    }
    smtp::ServerOptions options;
    options.hostname = deps_.settings.hostname;
    options.tls_active = c_->listener().implicit_tls;
    options.starttls_available = !c_->listener().implicit_tls;
    options.allow_plaintext_auth = deps_.settings.allow_plaintext_loopback && c_->loopback();
    if (deps_.smtp_extensions != nullptr) {
      options.upstream_extensions = deps_.smtp_extensions->get();
    }
    smtp::ServerMachine machine(std::move(options));
    std::vector<smtp::Action> actions = machine.start();
    std::vector<char> buffer(4096);
    for (;;) {
      if (actions.empty()) {
        if (c_->preauth_timed_out()) {
          co_return false;  // the deadline passed during an AUTH check: its answer went out
        }
        boost::system::error_code ec;
        const auto n = co_await c_->client().read_some(net::buffer(buffer), ec);
        if (ec && (c_->preauth_timed_out() || c_->closed_by_shutdown())) {
          co_return false;  // the connection closed it, and records why
        }
        if (ec) {
          note_refused_authorization(record, machine.authorization_refusals());
          add_close_reason(record, is_normal_close(ec)
                                       ? "client closed before AUTH"
                                       : fmt::format("client error: {}", ec.message()));
          if (record.username.empty() && is_normal_close(ec) && machine.errors() == 0 &&
              machine.authorization_refusals() == 0) {
            record.outcome = ConnectionOutcome::ok;
          }
          co_return false;
        }
        actions = machine.feed(std::string_view(buffer.data(), n));
        continue;
      }
      std::vector<smtp::Action> next;
      for (auto& action : actions) {
        if (auto* s = std::get_if<smtp::Send>(&action)) {
          const bool sent = co_await c_->send(s->bytes);
          if (!sent) {
            co_return false;
          }
        } else if (std::holds_alternative<smtp::StartTls>(action)) {
          const bool tls = co_await c_->accept_tls("STARTTLS");
          if (!tls) {
            co_return false;
          }
          next = machine.on_tls_started();
          break;
        } else if (auto* check = std::get_if<smtp::CheckCredentials>(&action)) {
          record.username = printable_username(check->username);
          c_->pause_preauth_timer();
          auto attempt = co_await login(std::move(check->username), std::move(check->password),
                                        std::move(check->client_name));
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
          next = machine.on_auth_result(std::move(attempt.outcome));
          break;
        } else if (auto* done = std::get_if<smtp::Authenticated>(&action)) {
          const bool forwarded = co_await c_->forward_pending(done->pending);
          co_return forwarded;
        } else if (auto* close = std::get_if<smtp::Close>(&action)) {
          if (close->reason == smtp::CloseReason::quit && record.username.empty()) {
            record.outcome = ConnectionOutcome::ok;
          } else if (close->reason == smtp::CloseReason::protocol_error ||
                     close->reason == smtp::CloseReason::too_many_commands) {
            record.outcome = ConnectionOutcome::protocol_error;
          }
          note_refused_authorization(record, machine.authorization_refusals());
          if (close->reason == smtp::CloseReason::too_many_auth_failures) {
            add_close_reason(record, "too many failed logins");
          } else if (record.close_reason.empty()) {
            record.close_reason =
                close->reason == smtp::CloseReason::quit ? "client quit" : "closed before AUTH";
          }
          c_->upstream().reset();
          co_return false;
        }
      }
      actions = std::move(next);
    }
  }

  awaitable<AuthAttempt> login(std::string username, Secret password, std::string client_name) {
    AuthAttempt attempt;
    std::string user = username;
    std::string address = c_->record().client_address;
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
      if (local.account_exists) {
        attempt.account = local.email;  // the log files the refusal under the mailbox it targeted
      }
      spdlog::info("conn={} AUTH refused for {}: {}", id_, printable_username(username),
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
          "Upstream refused the account's token (" + upstream_words(second.detail) +
              "); if it was authorized before sending was enabled, " + reauth_hint(local.email));
    }
    co_return second;
  }

  // What the upstream said, for the client's 535: its reason is often the answer (Microsoft's
  // "5.7.139 ... SmtpClientAuthentication is disabled for the Tenant" is fixed by the tenant's
  // admin, not by authorizing again). One line of printable ASCII (RFC 5321 §4.2), bounded.
  static std::string upstream_words(std::string_view detail) {
    // Not where the upstream is ("host:port: "): the client needs its words, not the topology.
    const auto said = detail.find("answered ");
    if (said != std::string_view::npos) {
      detail.remove_prefix(said);
    }
    // Bounded so that the reauth hint after it still fits the 512-octet reply line.
    return sanitize_for_protocol(detail, 160);
  }

  // Parameters are references (GCC PR 100611, docs/design.md).
  awaitable<AuthAttempt> upstream_login(const auth::LocalAuthOutcome& local,
                                        const SmtpEndpoint& endpoint,
                                        const std::string& client_name, bool force_refresh) {
    AuthAttempt attempt;
    attempt.account = local.email;
    auto token = co_await login_token(deps_.tokens, local.email, force_refresh, id_);
    if (!token.token) {
      attempt.detail = token.token.error().message;
      attempt.audit_outcome = token.audit_outcome;
      switch (token.trouble) {
        case TokenTrouble::needs_reauth:
          attempt.outcome = smtp::AuthOutcome::failed(
              smtp::AuthFailure::needs_reauth,
              "Account needs re-authorization: " + reauth_hint(local.email));
          break;
        case TokenTrouble::temporary:
          attempt.outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::temporary,
                                                      "Token service temporarily unavailable");
          break;
        default:
          attempt.outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::temporary,
                                                      "Cannot get a token for this account");
      }
      co_return attempt;
    }
    attempt.token_source = token.token->source;
    SmtpEndpoint target = endpoint;
    std::string ehlo = client_name;
    std::string user_name = local.email;
    Secret secret = token.token->secret;
    auto upstream = co_await connect_smtp_upstream(
        deps_.upstream_tls, std::move(target), std::move(ehlo), std::move(user_name),
        std::move(secret), token.token->is_password, deps_.settings.upstream.timeout);
    if (upstream) {
      if (deps_.smtp_extensions != nullptr) {
        deps_.smtp_extensions->set(fmt::format("{}:{}", endpoint.host, endpoint.port),
                                   upstream->extensions);
      }
      attempt.upstream = std::move(upstream->stream);
      attempt.upstream_pending = std::move(upstream->pending);
      attempt.audit_outcome = ConnectionOutcome::ok;
      attempt.outcome = smtp::AuthOutcome::success();
      spdlog::info("conn={} account={} authenticated upstream {}:{} (token from {})", id_,
                   local.email, endpoint.host, endpoint.port,
                   storage::to_string(token.token->source));
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
        attempt.outcome = smtp::AuthOutcome::failed(
            smtp::AuthFailure::bad_credentials,
            "Upstream refused the login (" + upstream_words(error.detail) + ")");
        attempt.retry_with_refresh = !token.token->is_password && !force_refresh;
        break;
      case UpstreamFailure::protocol:
        attempt.audit_outcome = ConnectionOutcome::upstream_unavailable;
        attempt.outcome = smtp::AuthOutcome::failed(smtp::AuthFailure::upstream_unavailable,
                                                    "Upstream protocol error");
        break;
    }
    co_return attempt;
  }

  std::shared_ptr<Connection> c_;
  SessionDeps deps_;
  std::string id_;
};

}  // namespace

awaitable<void> run_smtp_session(tcp::socket socket, SessionDeps deps, ListenerInfo listener,
                                 std::string conn_id, bool reject) {
  auto connection =
      std::make_shared<Connection>(deps, std::move(listener), conn_id, std::move(socket));
  auto session = std::make_shared<SmtpSession>(std::move(connection));
  co_await run_registered(std::move(session), std::move(conn_id), reject);
}

}  // namespace iop::proxy
