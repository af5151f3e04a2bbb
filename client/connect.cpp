// get_imap_connection(): the proxy's login path without the client side (ARCHITECTURE
// "get_imap_connection"): the account, its upstream (proxy::upstream_for), a token from the
// token service (proxy::login_token), the upstream connector (proxy::connect_upstream), and one
// forced refresh when the server refuses the token (as proxy/session.cpp does).

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>

#include "auth/local_auth.hpp"
#include "client/context.hpp"
#include "client/imap_connection_impl.hpp"
#include "common/blocking.hpp"
#include "common/sanitize.hpp"
#include "proxy/connection.hpp"
#include "proxy/session.hpp"
#include "proxy/upstream.hpp"

namespace imap_oauth2_proxy {

using iop::client::Context;
using iop::storage::ConnectionOutcome;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string next_connection_id() {
  static std::atomic<std::uint64_t> counter{0};
  return fmt::format("lib{}", ++counter);
}

// One token and one upstream login: the connection, or the error with what to record.
struct Attempt {
  std::optional<iop::proxy::UpstreamConnection> upstream;
  ErrorKind kind = ErrorKind::internal;
  std::string message;
  ConnectionOutcome outcome = ConnectionOutcome::upstream_unavailable;
  iop::storage::TokenSource token_source = iop::storage::TokenSource::none;
  bool retry_with_refresh = false;  // the upstream refused a token: worth one forced refresh
};

// Parameters by reference: the caller awaits, and GCC 12 mishandles owning by-value coroutine
// arguments (PR 100611).
iop::awaitable<Attempt> login_once(Context& context, const std::string& email,
                                   const iop::proxy::UpstreamEndpoint& endpoint,
                                   const iop::proxy::UpstreamOptions& options, bool force_refresh,
                                   const std::string& conn_id) {
  Attempt attempt;
  auto token =
      co_await iop::proxy::login_token(*context.services->tokens, email, force_refresh, conn_id);
  if (!token.token) {
    attempt.outcome = token.audit_outcome;
    attempt.message = iop::sanitize_for_log(token.token.error().message, 1024);
    switch (token.trouble) {
      case iop::proxy::TokenTrouble::needs_reauth: {
        attempt.kind = ErrorKind::needs_reauth;
        // The token service's message names the command already; say it in any case.
        const std::string hint = iop::proxy::reauth_hint(email);
        if (attempt.message.find(hint) == std::string::npos) {
          attempt.message += ": " + hint;
        }
        break;
      }
      case iop::proxy::TokenTrouble::temporary:
        attempt.kind = iop::client::error_kind(token.token.error().code);
        break;
      default:
        attempt.kind = iop::client::error_kind(token.token.error().code);
    }
    co_return attempt;
  }
  attempt.token_source = token.token->source;
  iop::proxy::UpstreamEndpoint target = endpoint;
  std::string user = email;
  iop::Secret secret = token.token->secret;
  auto upstream = co_await iop::proxy::connect_upstream(*context.upstream_tls, std::move(target),
                                                        std::move(user), std::move(secret),
                                                        token.token->is_password, options);
  if (upstream) {
    attempt.upstream = std::move(*upstream);
    attempt.outcome = ConnectionOutcome::ok;
    co_return attempt;
  }
  const iop::proxy::UpstreamError error = upstream.error();
  const std::string where = fmt::format("{}:{}", endpoint.host, endpoint.port);
  spdlog::warn("conn={} account={} upstream login failed ({}): {}", conn_id, email,
               iop::proxy::to_string(error.kind), error.detail);
  switch (error.kind) {
    case iop::proxy::UpstreamFailure::unavailable:
      attempt.kind = ErrorKind::upstream_unavailable;
      attempt.outcome = ConnectionOutcome::upstream_unavailable;
      attempt.message = fmt::format("IMAP server {} unavailable: {}", where, error.detail);
      break;
    case iop::proxy::UpstreamFailure::not_connected:
      attempt.kind = ErrorKind::auth_rejected;
      attempt.outcome = ConnectionOutcome::auth_failed;
      attempt.message = fmt::format(
          "IMAP server {} accepted the login but not the session ({}): check the account's "
          "mailbox and permissions",
          where, error.detail);
      break;
    case iop::proxy::UpstreamFailure::auth_rejected:
      attempt.kind = ErrorKind::auth_rejected;
      attempt.outcome = ConnectionOutcome::auth_failed;
      // error.detail already says who refused; the next step depends on what was sent.
      attempt.message = fmt::format(
          "{}: {}", error.detail,
          token.token->is_password
              ? "the stored upstream password is wrong; store the right one with "
                "'imap-oauth2-proxy account reauth " +
                    email + " --password-stdin'"
              : "the server refused a freshly refreshed token; authorize the account again with "
                "'imap-oauth2-proxy account reauth " +
                    email + "'");
      attempt.retry_with_refresh = !token.token->is_password && !force_refresh;
      break;
    case iop::proxy::UpstreamFailure::protocol:
      attempt.kind = ErrorKind::protocol;
      attempt.outcome = ConnectionOutcome::upstream_unavailable;
      attempt.message = fmt::format("IMAP server {}: protocol error: {}", where, error.detail);
      break;
  }
  co_return attempt;
}

// The one implementation behind both entry points. Runs on the stream's executor: the caller's
// (async) or `own_io` (blocking).
iop::awaitable<ImapConnection> connect(std::string email, ConnectOptions options,
                                       std::shared_ptr<net::io_context> own_io) {
  const std::optional<std::filesystem::path> config_file = options.config_file;
  const std::shared_ptr<Context> context =
      co_await iop::run_on_pool(iop::client::setup_executor(),
                                [&config_file] { return iop::client::context_for(config_file); });
  auto& services = *context->services;

  auto impl = std::make_unique<ImapConnection::Impl>();
  impl->context = context;
  impl->own_io = std::move(own_io);
  impl->id = next_connection_id();
  impl->record.started_at_ms = now_ms();
  impl->record.listener = "library";
  impl->record.username = iop::printable_username(email);

  auto row = co_await iop::run_on_pool(services.blocking.get_executor(),
                                       [&] { return services.store->get(email); });
  if (!row) {
    impl->record.outcome = ConnectionOutcome::auth_failed;
    const auto kind = iop::client::error_kind(row.error().code);
    // The store's message names what was asked for, verbatim; the row and the error show it
    // through the one username rule (a password passed by mistake is not kept), with the step
    // that fixes it.
    std::string message = row.error().message;
    if (row.error().code == iop::Errc::not_found ||
        row.error().code == iop::Errc::invalid_argument) {
      message = "no account " + iop::printable_username(email) +
                ": see 'imap-oauth2-proxy account list', add one with 'imap-oauth2-proxy account "
                "add EMAIL'";
    }
    impl->fail(kind, message,
               kind == ErrorKind::storage ? ConnectionOutcome::upstream_unavailable
                                          : ConnectionOutcome::auth_failed);
  }
  impl->account = row->email;
  impl->record.account = row->email;
  // The account's upstream exactly as the proxy picks it (its own, its provider's, the default).
  iop::auth::LocalAuthOutcome local;
  local.result = iop::auth::LocalAuthResult::ok;
  local.email = row->email;
  local.upstream_host = row->upstream_host;
  local.upstream_port = row->upstream_port;
  local.provider = row->provider;
  const iop::proxy::UpstreamEndpoint endpoint = iop::proxy::upstream_for(local, context->settings);
  iop::proxy::UpstreamOptions upstream_options = context->settings.upstream;
  if (options.timeout.count() > 0) {
    upstream_options.timeout = options.timeout;
  }
  impl->timeout = upstream_options.timeout;

  auto attempt =
      co_await login_once(*context, local.email, endpoint, upstream_options, false, impl->id);
  if (attempt.retry_with_refresh) {
    // A token the server refuses may have been revoked or expired early: refresh once, retry.
    services.tokens->forget(local.email);
    attempt =
        co_await login_once(*context, local.email, endpoint, upstream_options, true, impl->id);
  }
  impl->record.token_source = attempt.token_source;
  if (!attempt.upstream) {
    impl->fail(attempt.kind, attempt.message, attempt.outcome);
  }
  spdlog::info("conn={} account={} connected to {}:{} (token from {})", impl->id, local.email,
               endpoint.host, endpoint.port, iop::storage::to_string(attempt.token_source));
  impl->stream = std::move(attempt.upstream->stream);
  impl->capabilities = std::move(attempt.upstream->capabilities);
  // Bytes the server sent after its login completion (e.g. an untagged response) come first.
  impl->reader.feed(attempt.upstream->pending);
  co_return ImapConnection(std::move(impl));
}

}  // namespace

ImapConnection get_imap_connection(std::string_view email, const ConnectOptions& options) {
  auto io = std::make_shared<net::io_context>();
  auto future = net::co_spawn(*io, connect(std::string(email), options, io), net::use_future);
  io->run();
  return future.get();
}

ImapConnection get_imap_connection(std::string_view email,
                                   const std::filesystem::path& config_file) {
  ConnectOptions options;
  options.config_file = config_file;
  return get_imap_connection(email, options);
}

boost::asio::awaitable<ImapConnection> async_get_imap_connection(std::string_view email,
                                                                 ConnectOptions options) {
  return connect(std::string(email), std::move(options), nullptr);
}

}  // namespace imap_oauth2_proxy
