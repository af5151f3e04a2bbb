#include "proxy/connection.hpp"

#include <spdlog/spdlog.h>

#include "common/clock.hpp"
#include "common/sanitize.hpp"
#include "proxy/relay.hpp"

namespace iop::proxy {

using storage::ConnectionOutcome;
using Clock = std::chrono::steady_clock;

Connection::Connection(SessionDeps deps, ListenerInfo listener, std::string id, tcp::socket socket)
    : deps_(deps),
      listener_(std::move(listener)),
      id_(std::move(id)),
      client_(std::move(socket), deps.server_tls),
      preauth_timer_(client_.socket().get_executor()),
      started_(Clock::now()) {
  boost::system::error_code ec;
  const auto remote = client_.socket().remote_endpoint(ec);
  record_.started_at_ms = to_unix_millis(std::chrono::system_clock::now());
  record_.listener = listener_.name;
  if (!ec) {
    record_.client_address = remote.address().to_string();
    record_.client_port = remote.port();
    loopback_ = remote.address().is_loopback();
  }
  // Until the session says otherwise: a client that leaves after garbage is a protocol error.
  record_.outcome = ConnectionOutcome::protocol_error;
}

awaitable<void> Connection::reject(std::string_view refusal) {
  arm_preauth_timer();
  boost::system::error_code ec;
  if (listener_.implicit_tls) {
    co_await client_.accept_tls(ec);
  }
  if (!ec) {
    co_await send(refusal);
  }
  preauth_timer_.cancel();
  co_await client_.shutdown(std::chrono::seconds(1));
  record_.outcome = ConnectionOutcome::rejected;
  record_.close_reason = "max_connections reached";
  record_.ended_at_ms = to_unix_millis(std::chrono::system_clock::now());
  spdlog::warn("conn={} rejected: max_connections ({}) reached", id_,
               deps_.settings.max_connections);
  write_audit();
}

awaitable<void> Connection::finish(std::chrono::milliseconds idle_timeout) {
  preauth_timer_.cancel();
  if (upstream_) {
    record_.outcome = ConnectionOutcome::ok;
    const auto result = co_await relay(client_, *upstream_, idle_timeout, observer_);
    record_.bytes_client_to_upstream += static_cast<std::int64_t>(result.client_to_upstream);
    record_.bytes_upstream_to_client += static_cast<std::int64_t>(result.upstream_to_client);
    record_.close_reason =
        login_note_.empty() ? result.close_reason : login_note_ + "; " + result.close_reason;
    if (result.idle_timeout) {
      record_.outcome = ConnectionOutcome::timeout;
    }
    if (closed_by_shutdown_) {
      record_.outcome = ConnectionOutcome::shutdown;
    }
  } else {
    if (preauth_timed_out_) {
      // A login whose answer went out after the deadline keeps its outcome (what the client was
      // told: the token endpoint was down, the password wrong); the reason says how it ended.
      if (!deadline_passed_in_login_) {
        record_.outcome = ConnectionOutcome::timeout;
      }
      add_close_reason(record_, "pre-auth timeout");
    } else if (closed_by_shutdown_) {
      record_.outcome = ConnectionOutcome::shutdown;
      add_close_reason(record_, "closed by the proxy's shutdown");
    }
    co_await client_.shutdown(std::chrono::seconds(1));
  }
  if (messages_) {
    record_.messages = messages_();
  }
  record_.ended_at_ms = to_unix_millis(std::chrono::system_clock::now());
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_);
  spdlog::info(
      "conn={} closed: outcome={} account={} client={}:{} token={} bytes_in={} bytes_out={} "
      "duration={}ms reason=\"{}\"",
      id_, storage::to_string(record_.outcome), record_.account.empty() ? "-" : record_.account,
      record_.client_address, record_.client_port, storage::to_string(record_.token_source),
      record_.bytes_client_to_upstream, record_.bytes_upstream_to_client, ms.count(),
      sanitize_for_log(record_.close_reason, storage::max_audit_text_bytes));
  write_audit();
}

awaitable<bool> Connection::accept_tls(std::string_view what) {
  boost::system::error_code ec;
  co_await client_.accept_tls(ec);
  if (ec) {
    record_.close_reason = fmt::format("{} handshake failed: {}", what, ec.message());
    spdlog::debug("conn={} {}", id_, record_.close_reason);
    co_return false;
  }
  co_return true;
}

awaitable<bool> Connection::send(std::string_view bytes) {
  boost::system::error_code ec;
  co_await client_.write_all(net::buffer(bytes.data(), bytes.size()), ec);
  if (ec) {
    record_.close_reason = "client went away";
  }
  co_return !ec;
}

awaitable<bool> Connection::forward_pending(const std::string& client_pending) {
  if (!upstream_pending_.empty()) {
    // What the server said right after the login, after our answer: byte-exact.
    if (observer_) {
      observer_(false, upstream_pending_);
    }
    const bool sent = co_await send(upstream_pending_);
    if (!sent) {
      co_return false;
    }
    record_.bytes_upstream_to_client += static_cast<std::int64_t>(upstream_pending_.size());
  }
  if (!client_pending.empty()) {
    // Commands the client pipelined after its login go upstream first.
    if (observer_) {
      observer_(true, client_pending);
    }
    boost::system::error_code ec;
    co_await upstream_->write_all(net::buffer(client_pending), ec);
    record_.bytes_client_to_upstream += static_cast<std::int64_t>(client_pending.size());
  }
  co_return true;
}

void Connection::observe(RelayObserver observer, std::function<std::int64_t()> messages) {
  observer_ = std::move(observer);
  messages_ = std::move(messages);
}

void Connection::arm_preauth_timer() {
  // One deadline counted from accept, never restarted: restarting it after each failed login
  // let a client hold a connection max_failed_logins times over (issue #7 item 9).
  const auto now = Clock::now();
  if (!preauth_deadline_) {
    preauth_deadline_ = now + deps_.settings.preauth_timeout;
  }
  // A deadline that passed while a login was being checked (the timer paused: a slow password
  // hash under load, the failure delay): the connection is over, but the client first gets the
  // login's answer (bounded by a short grace for the write); the session reads nothing more.
  constexpr std::chrono::seconds answer_grace{1};
  if (*preauth_deadline_ <= now) {
    preauth_timed_out_ = true;
    deadline_passed_in_login_ = true;
  }
  preauth_timer_.expires_at(preauth_timed_out_ ? now + answer_grace : *preauth_deadline_);
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

void Connection::pause_preauth_timer() {
  preauth_timer_.cancel();
  ++preauth_generation_;  // even an expiry already queued must not close us mid-login
}

void Connection::close_now() {
  closed_by_shutdown_ = true;
  client_.cancel();
  client_.close();
  if (upstream_) {
    upstream_->cancel();
    upstream_->close();
  }
}

void Connection::fail_internal(std::string_view what) {
  spdlog::error("conn={} internal error: {}", id_, what);
  record_.outcome = ConnectionOutcome::internal_error;
  record_.close_reason = std::string(what);
  record_.ended_at_ms = to_unix_millis(std::chrono::system_clock::now());
}

void Connection::write_audit() {
  // Queued for the writer's own thread (storage/audit_writer.hpp), which writes in batches and
  // keeps the row while the database refuses it: the session neither waits for the disk nor
  // uses a blocking-pool thread for it (issue #8, Audit).
  if (deps_.audit != nullptr) {
    deps_.audit->enqueue(record_);
  }
}

awaitable<LoginToken> login_token(auth::TokenService& tokens, const std::string& email,
                                  bool force_refresh, const std::string& conn_id) {
  LoginToken out;
  std::string who = email;
  if (force_refresh) {
    out.token = co_await tokens.refresh_now(std::move(who));
  } else {
    out.token = co_await tokens.ensure_fresh_token(std::move(who));
  }
  if (out.token) {
    out.trouble = TokenTrouble::none;
    out.audit_outcome = ConnectionOutcome::ok;
    co_return out;
  }
  const auto& e = out.token.error();
  switch (e.code) {
    case Errc::needs_reauth:
      out.trouble = TokenTrouble::needs_reauth;
      out.audit_outcome = ConnectionOutcome::needs_reauth;
      break;
    case Errc::endpoint_unavailable:
    case Errc::storage_unavailable:
      out.trouble = TokenTrouble::temporary;
      out.audit_outcome = ConnectionOutcome::upstream_unavailable;
      break;
    default:
      out.trouble = TokenTrouble::other;
      out.audit_outcome = ConnectionOutcome::upstream_unavailable;
  }
  // The message may quote the token endpoint's error_description (it holds CRLFs).
  spdlog::warn("conn={} account={} no token: {}", conn_id, email,
               sanitize_for_log(e.message, storage::max_audit_text_bytes));
  co_return out;
}

void add_close_reason(storage::ConnectionRecord& record, std::string_view what) {
  record.close_reason = record.close_reason.empty()
                            ? std::string(what)
                            : record.close_reason + "; " + std::string(what);
}

void note_refused_authorization(storage::ConnectionRecord& record, std::size_t refusals) {
  if (record.username.empty() && refusals > 0) {
    record.outcome = ConnectionOutcome::auth_failed;
    add_close_reason(record, "authorization identity refused");
  }
}

std::string reauth_hint(std::string_view email) {
  return fmt::format("run 'imap-oauth2-proxy account reauth {}'", email);
}

}  // namespace iop::proxy
