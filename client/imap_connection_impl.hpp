#pragma once
// The inside of an ImapConnection: the authenticated upstream stream, the response reader, the
// tag counter and the connection-log record. Every coroutine runs on the stream's executor.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/context.hpp"
#include "client/response_reader.hpp"
#include "common/asio.hpp"
#include "imap_oauth2_proxy/client.hpp"
#include "proxy/imap_stream.hpp"
#include "storage/audit_log.hpp"

namespace imap_oauth2_proxy {

// Hidden: only the public API leaves the shared library.
struct __attribute__((visibility("hidden"))) ImapConnection::Impl {
  std::shared_ptr<iop::client::Context> context;
  // Connections from get_imap_connection(): the io_context their stream lives on, run by each
  // blocking call. Null for async connections.
  std::shared_ptr<net::io_context> own_io;
  std::unique_ptr<iop::proxy::ImapStream> stream;
  iop::client::ResponseReader reader;
  std::string account;
  std::vector<std::string> capabilities;
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  std::string id;  // "lib3", for log lines
  std::uint64_t next_tag = 1;
  std::vector<char> buffer = std::vector<char>(16 * 1024);
  iop::storage::ConnectionRecord record;
  bool recorded = false;
  std::string last_bye;  // the text of the server's last `* BYE`

  // Sends a command and reads its completion (see ImapConnection::command).
  iop::awaitable<Response> command(const std::string& text);
  iop::awaitable<Response> idle(const IdleCallback& on_update, std::chrono::milliseconds max_wait);
  // The same owning their arguments (the public async_ methods hand them over).
  iop::awaitable<Response> command_owned(std::string text);
  iop::awaitable<Response> idle_owned(IdleCallback on_update, std::chrono::milliseconds max_wait);
  // LOGOUT (bounded), close, connection-log row. Never throws.
  iop::awaitable<void> logout();

  // The next response. With `soft_deadline`: nullopt once it passed with no complete response
  // (the stream stays usable; IDLE). Without: no bytes for `timeout` closes and throws.
  iop::awaitable<std::optional<iop::client::ServerResponse>> next_response(
      std::optional<std::chrono::steady_clock::time_point> soft_deadline);
  iop::awaitable<void> send(std::string_view bytes);
  // Closes the stream after a failure and throws `kind` with `message`.
  [[noreturn]] void fail(ErrorKind kind, const std::string& message,
                         iop::storage::ConnectionOutcome outcome);
  // Puts the row in the connection log (once): on the context's blocking pool, not awaited.
  void record_close(iop::storage::ConnectionOutcome outcome, const std::string& reason);
  void check_open() const;
};

}  // namespace imap_oauth2_proxy
