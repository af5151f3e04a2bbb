#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <future>

#include "client/command_parts.hpp"
#include "client/imap_connection_impl.hpp"
#include "client/tls_stream_impl.hpp"
#include "common/ascii.hpp"
#include "common/clock.hpp"
#include "common/deadline.hpp"
#include "common/sanitize.hpp"

namespace imap_oauth2_proxy {

using iop::client::ResponseKind;
using iop::client::ServerResponse;
using iop::storage::ConnectionOutcome;

namespace {

// LOGOUT at the end is a courtesy to the server: it must not hold up the caller.
constexpr std::chrono::milliseconds logout_limit{3000};
constexpr std::chrono::milliseconds tls_close_limit{1000};

UntaggedResponse to_untagged(ServerResponse&& r) {
  return UntaggedResponse{std::move(r.text), std::move(r.literals)};
}

Status to_status(iop::client::TaggedStatus status) {
  switch (status) {
    case iop::client::TaggedStatus::ok:
      return Status::ok;
    case iop::client::TaggedStatus::no:
      return Status::no;
    case iop::client::TaggedStatus::bad:
      return Status::bad;
  }
  return Status::bad;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Runs `op` to completion on the connection's own io_context (blocking connections only).
template <class T>
T run_sync(ImapConnection::Impl& impl, iop::awaitable<T> op) {
  if (!impl.own_io) {
    throw Error(ErrorKind::usage,
                "this connection came from async_get_imap_connection(): use its async_ methods");
  }
  auto& io = *impl.own_io;
  io.restart();
  auto future = net::co_spawn(io, std::move(op), net::use_future);
  io.run();
  return future.get();
}

}  // namespace

void ImapConnection::Impl::check_open() const {
  if (!stream) {
    throw Error(ErrorKind::closed, "the IMAP connection is closed (logged out, released or lost)");
  }
}

void ImapConnection::Impl::fail(ErrorKind kind, const std::string& message,
                                ConnectionOutcome outcome) {
  if (stream) {
    stream->close();
    stream.reset();
  }
  record_close(outcome, message);
  throw Error(kind, message);
}

void ImapConnection::Impl::record_close(ConnectionOutcome outcome, const std::string& reason) {
  if (recorded || !context) {
    return;
  }
  recorded = true;
  record.ended_at_ms = now_ms();
  record.outcome = outcome;
  record.close_reason = reason;
  // Queued on the services' connection-log writer: no I/O here, so a destructor or
  // release_stream() can record the row; the writer is flushed when the context goes away.
  iop::client::write_connection_record(*context, record);
}

iop::awaitable<void> ImapConnection::Impl::send(std::string_view bytes) {
  check_open();
  boost::system::error_code ec;
  const auto executor = co_await net::this_coro::executor;
  iop::Deadline deadline(executor, timeout, [this] { stream->close(); });
  // One write per part: Dovecot needs each line with its CRLF in a single write (TESTING.md).
  co_await stream->write_all(net::buffer(bytes.data(), bytes.size()), ec);
  const bool timed_out = deadline.fired();
  deadline.disarm();
  if (ec) {
    fail(ErrorKind::upstream_unavailable,
         timed_out ? fmt::format("the IMAP server took more than {} ms to take a command",
                                 timeout.count())
                   : fmt::format("the IMAP connection was lost: {}", ec.message()),
         timed_out ? ConnectionOutcome::timeout : ConnectionOutcome::upstream_unavailable);
  }
  record.bytes_client_to_upstream += static_cast<std::int64_t>(bytes.size());
}

iop::awaitable<std::optional<ServerResponse>> ImapConnection::Impl::next_response(
    std::optional<std::chrono::steady_clock::time_point> soft_deadline) {
  const auto executor = co_await net::this_coro::executor;
  for (;;) {
    if (auto r = reader.next()) {
      if (r->kind == ResponseKind::untagged && iop::ascii_istarts_with(r->text, "* BYE")) {
        last_bye =
            iop::sanitize_for_log(r->text.substr(std::min<std::size_t>(6, r->text.size())), 200);
      }
      co_return r;
    }
    if (reader.error()) {
      fail(ErrorKind::protocol, "the IMAP server sent something unreadable: " + *reader.error(),
           ConnectionOutcome::protocol_error);
    }
    check_open();
    if (soft_deadline && std::chrono::steady_clock::now() >= *soft_deadline) {
      co_return std::nullopt;
    }
    boost::system::error_code ec;
    std::size_t n = 0;
    bool fired = false;
    if (soft_deadline) {
      // IDLE: at the end of the wait, stop reading (the stream stays usable for DONE).
      iop::Deadline deadline(executor, *soft_deadline - std::chrono::steady_clock::now(),
                             [this] { stream->cancel(); });
      n = co_await stream->read_some(net::buffer(buffer), ec);
      fired = deadline.fired();
    } else {
      iop::Deadline deadline(executor, timeout, [this] { stream->close(); });
      n = co_await stream->read_some(net::buffer(buffer), ec);
      fired = deadline.fired();
    }
    if (n > 0) {
      record.bytes_upstream_to_client += static_cast<std::int64_t>(n);
      reader.feed(std::string_view(buffer.data(), n));
    }
    if (ec && soft_deadline && fired && ec == net::error::operation_aborted) {
      continue;  // the loop returns what is complete, else nullopt
    }
    if (ec) {
      if (fired) {
        fail(ErrorKind::upstream_unavailable,
             fmt::format("no answer from the IMAP server within {} ms", timeout.count()),
             ConnectionOutcome::timeout);
      }
      const std::string why = last_bye.empty()
                                  ? fmt::format("the IMAP connection was lost: {}", ec.message())
                                  : "the IMAP server closed the connection: " + last_bye;
      fail(ErrorKind::upstream_unavailable, why,
           last_bye.empty() ? ConnectionOutcome::upstream_unavailable : ConnectionOutcome::ok);
    }
  }
}

iop::awaitable<Response> ImapConnection::Impl::command(const std::string& text) {
  check_open();
  Response out;
  out.tag = fmt::format("L{}", next_tag++);
  const std::string line = out.tag + " " + text + "\r\n";
  std::string error;
  const auto parts = iop::client::split_at_literals(line, error);
  if (!parts) {
    throw Error(ErrorKind::usage, "command not sent: " + error);
  }
  bool saw_bye = false;
  for (std::size_t i = 0; i < parts->size(); ++i) {
    co_await send((*parts)[i]);
    const bool wait_for_continuation = i + 1 < parts->size();
    for (;;) {
      auto r = co_await next_response(std::nullopt);
      if (r->kind == ResponseKind::continuation) {
        if (wait_for_continuation) {
          break;
        }
        fail(ErrorKind::protocol, "the IMAP server asked for more than the command held",
             ConnectionOutcome::protocol_error);
      }
      if (r->kind == ResponseKind::untagged) {
        saw_bye = saw_bye || iop::ascii_istarts_with(r->text, "* BYE");
        out.untagged.push_back(to_untagged(std::move(*r)));
        continue;
      }
      if (r->tag != out.tag) {
        fail(ErrorKind::protocol,
             "the IMAP server completed a command this connection did not send",
             ConnectionOutcome::protocol_error);
      }
      // The completion, also when a literal was refused before its continuation (RFC 9051
      // §7.5: the server answers NO or BAD instead of "+").
      out.status = to_status(r->status);
      out.text = std::move(r->status_text);
      if (saw_bye && out.ok()) {
        // LOGOUT (or a server going away politely): the server closes now.
        co_await stream->shutdown(tls_close_limit);
        stream.reset();
        record_close(ConnectionOutcome::ok, "logged out");
      }
      co_return out;
    }
  }
  co_return out;  // not reached: the last part's loop returns
}

iop::awaitable<Response> ImapConnection::Impl::idle(const IdleCallback& on_update,
                                                    std::chrono::milliseconds max_wait) {
  check_open();
  Response out;
  out.tag = fmt::format("L{}", next_tag++);
  const std::string line = out.tag + " IDLE\r\n";
  co_await send(line);
  // RFC 2177: "+ idling", or a tagged NO/BAD from a server without IDLE.
  for (;;) {
    auto r = co_await next_response(std::nullopt);
    if (r->kind == ResponseKind::continuation) {
      break;
    }
    if (r->kind == ResponseKind::tagged) {
      out.status = to_status(r->status);
      out.text = std::move(r->status_text);
      co_return out;
    }
    out.untagged.push_back(to_untagged(std::move(*r)));
  }
  const auto until = std::chrono::steady_clock::now() + max_wait;
  std::exception_ptr callback_error;
  for (;;) {
    auto r = co_await next_response(until);
    if (!r) {
      break;
    }
    if (r->kind == ResponseKind::tagged) {
      // The server ended the IDLE itself.
      out.status = to_status(r->status);
      out.text = std::move(r->status_text);
      co_return out;
    }
    if (r->kind != ResponseKind::untagged) {
      continue;
    }
    const UntaggedResponse update = to_untagged(std::move(*r));
    bool go_on = false;
    try {
      go_on = on_update(update);
    } catch (...) {
      callback_error = std::current_exception();
    }
    if (!go_on) {
      break;
    }
  }
  co_await send("DONE\r\n");
  for (;;) {
    auto r = co_await next_response(std::nullopt);
    if (r->kind == ResponseKind::tagged) {
      out.status = to_status(r->status);
      out.text = std::move(r->status_text);
      break;
    }
    if (r->kind == ResponseKind::untagged) {
      out.untagged.push_back(to_untagged(std::move(*r)));
    }
  }
  if (callback_error) {
    std::rethrow_exception(callback_error);
  }
  co_return out;
}

iop::awaitable<Response> ImapConnection::Impl::command_owned(std::string text) {
  co_return co_await command(text);
}

iop::awaitable<Response> ImapConnection::Impl::idle_owned(IdleCallback on_update,
                                                          std::chrono::milliseconds max_wait) {
  co_return co_await idle(on_update, max_wait);
}

iop::awaitable<void> ImapConnection::Impl::logout() {
  if (!stream) {
    co_return;
  }
  timeout = std::min(timeout, logout_limit);
  try {
    const std::string logout_command = "LOGOUT";
    co_await command(logout_command);
  } catch (const std::exception& e) {
    spdlog::debug("conn={} account={} logout: {}", id, account, e.what());
  }
  if (stream) {
    co_await stream->shutdown(tls_close_limit);
    stream.reset();
  }
  record_close(ConnectionOutcome::ok, "logged out");
}

ImapConnection::ImapConnection() noexcept = default;
ImapConnection::ImapConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImapConnection::ImapConnection(ImapConnection&&) noexcept = default;

ImapConnection& ImapConnection::operator=(ImapConnection&& other) noexcept {
  if (this != &other) {
    logout();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

ImapConnection::~ImapConnection() {
  if (!impl_ || !impl_->stream) {
    return;
  }
  if (impl_->own_io) {
    logout();
    return;
  }
  // An async connection: LOGOUT on its executor, the frame owning the connection's inside.
  auto executor = impl_->stream->socket().get_executor();
  std::shared_ptr<Impl> impl(std::move(impl_));
  try {
    net::co_spawn(
        executor, [impl]() -> iop::awaitable<void> { co_await impl->logout(); },
        [](std::exception_ptr) {});
  } catch (...) {
    impl->stream->close();
    impl->record_close(ConnectionOutcome::ok, "closed");
  }
}

const std::string& ImapConnection::account() const { return impl_->account; }

const std::vector<std::string>& ImapConnection::capabilities() const { return impl_->capabilities; }

bool ImapConnection::is_open() const { return impl_ && impl_->stream; }

Response ImapConnection::command(std::string_view command) {
  if (!impl_) {
    throw Error(ErrorKind::closed, "the IMAP connection was moved from");
  }
  const std::string text(command);
  return run_sync(*impl_, impl_->command(text));
}

boost::asio::awaitable<Response> ImapConnection::async_command(std::string_view command) {
  if (!impl_) {
    throw Error(ErrorKind::closed, "the IMAP connection was moved from");
  }
  if (impl_->own_io) {
    throw Error(ErrorKind::usage,
                "this connection came from get_imap_connection(): use its blocking methods");
  }
  // Not a coroutine itself: the text is copied into the coroutine's frame here, outside the
  // caller's co_await expression.
  return impl_->command_owned(std::string(command));
}

Response ImapConnection::idle(const IdleCallback& on_update, std::chrono::milliseconds max_wait) {
  if (!impl_) {
    throw Error(ErrorKind::closed, "the IMAP connection was moved from");
  }
  return run_sync(*impl_, impl_->idle(on_update, max_wait));
}

boost::asio::awaitable<Response> ImapConnection::async_idle(IdleCallback on_update,
                                                            std::chrono::milliseconds max_wait) {
  if (!impl_) {
    throw Error(ErrorKind::closed, "the IMAP connection was moved from");
  }
  if (impl_->own_io) {
    throw Error(ErrorKind::usage,
                "this connection came from get_imap_connection(): use its blocking methods");
  }
  return impl_->idle_owned(std::move(on_update), max_wait);
}

void ImapConnection::logout() noexcept {
  if (!impl_ || !impl_->stream) {
    return;
  }
  try {
    if (impl_->own_io) {
      run_sync(*impl_, impl_->logout());
    } else {
      // Not on the connection's executor from here: close at once (async_logout() is polite).
      impl_->stream->close();
      impl_->stream.reset();
      impl_->record_close(ConnectionOutcome::ok, "closed");
    }
  } catch (...) {
    impl_->stream.reset();
    impl_->record_close(ConnectionOutcome::ok, "closed");
  }
}

boost::asio::awaitable<void> ImapConnection::async_logout() {
  if (!impl_ || !impl_->stream) {
    co_return;
  }
  Impl& impl = *impl_;
  co_await impl.logout();
}

ReleasedStream ImapConnection::release_stream() {
  if (!impl_) {
    throw Error(ErrorKind::closed, "the IMAP connection was moved from");
  }
  impl_->check_open();
  ReleasedStream out;
  auto released = std::make_unique<TlsStream::Impl>();
  released->stream = std::move(impl_->stream);
  out.stream = std::make_unique<TlsStream>(TlsStream(std::move(released)));
  out.buffered = impl_->reader.take_buffered();
  out.io_context = impl_->own_io;
  impl_->stream.reset();
  impl_->record_close(ConnectionOutcome::ok, "stream released to the application");
  return out;
}

}  // namespace imap_oauth2_proxy
