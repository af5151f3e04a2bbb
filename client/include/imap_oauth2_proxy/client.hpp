#pragma once
// imap-oauth2-proxy's library for applications: an authenticated IMAP connection to an
// account's mailbox, without handling tokens.
//
//   #include <imap_oauth2_proxy/client.hpp>
//   auto imap = imap_oauth2_proxy::get_imap_connection("alice@example.com");
//   auto r = imap.command("SELECT INBOX");
//
// It uses what `imap-oauth2-proxy serve` uses: the same configuration file (found as the
// command line finds it, or given), the same credentials database and master key, the same
// token service (memory, Redis, database, then one refresh, single-flight with running proxies
// through the Redis lock) and the same upstream connector (verified TLS, XOAUTH2, or LOGIN for
// accounts with a stored password). Each connection is recorded in the connection log with the
// listener `library`.
//
// Needs C++20 (coroutines), Boost.Asio 1.74 or newer headers and OpenSSL. Link with CMake
// (find_package(ImapOAuth2Proxy) then ImapOAuth2Proxy::client) or pkg-config
// (imap-oauth2-proxy-client). Errors are thrown as imap_oauth2_proxy::Error with a kind; no
// message holds a secret.

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio/awaitable.hpp>

// The async_ functions need Asio's coroutine support, which Boost 1.74 turns on by itself for
// GCC >= 10 in C++20 but not for clang (define BOOST_ASIO_HAS_CO_AWAIT and
// BOOST_ASIO_HAS_STD_COROUTINE there). Without it the blocking API alone is declared, so the
// header still compiles.
#if defined(BOOST_ASIO_HAS_CO_AWAIT)
#define IMAP_OAUTH2_PROXY_ASYNC 1
#else
#define IMAP_OAUTH2_PROXY_ASYNC 0
#endif
#include <openssl/ssl.h>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/detail/throw_error.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#define IMAP_OAUTH2_PROXY_API __attribute__((visibility("default")))

namespace imap_oauth2_proxy {

// Why a call failed. The message of the Error says what to do.
enum class ErrorKind {
  needs_reauth,          // the account's refresh token is dead: the message names the command
  not_found,             // no such account (or not an email address)
  auth_rejected,         // the upstream refused the login even with a freshly refreshed token
  upstream_unavailable,  // the IMAP server cannot be reached, timed out, or closed on us
  token_unavailable,     // the token endpoint cannot be reached now: try again later
  config,                // the configuration file is missing, unreadable or invalid
  storage,               // the credentials database or master key cannot be used
  protocol,              // the server sent something that is not IMAP
  closed,                // the connection was logged out, released or lost before this call
  usage,                 // a call this connection does not support (see ImapConnection)
  internal,              // anything else
};

// "needs_reauth", "not_found", ... (the enumerator names).
IMAP_OAUTH2_PROXY_API const char* to_string(ErrorKind kind) noexcept;

class IMAP_OAUTH2_PROXY_API Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);
  [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

struct ConnectOptions {
  // The configuration file; unset: the command line's lookup ($IMAP_OAUTH2_PROXY_CONFIG,
  // ./imap-oauth2-proxy.toml, then ~/.config/imap-oauth2-proxy/imap-oauth2-proxy.toml).
  std::optional<std::filesystem::path> config_file;
  // How long connecting and logging in may take, and how long a command may wait for the
  // server's next bytes; 0: the configuration's [upstream] timeout.
  std::chrono::milliseconds timeout{0};
};

// How the server completed a command (RFC 9051 §7.1).
enum class Status { ok, no, bad };

// One untagged response ("* ..."). `text` is its lines without the final CRLF; a literal's
// bytes are not in it, only its `{N}` marker followed by CRLF, and they are in `literals`, in
// order, byte for byte: `* 1 FETCH (BODY[] {5}\r\n)` with literals {"hello"}.
struct UntaggedResponse {
  std::string text;
  std::vector<std::string> literals;
};

struct Response {
  Status status = Status::ok;
  std::string tag;   // the tag the connection generated for the command
  std::string text;  // the tagged line after the status: "[READ-WRITE] Select completed"
  std::vector<UntaggedResponse> untagged;  // what the server sent before it, in order

  [[nodiscard]] bool ok() const { return status == Status::ok; }
};

// The authenticated TLS connection release_stream() hands over: an Asio stream (SyncReadStream,
// SyncWriteStream, AsyncReadStream, AsyncWriteStream), so boost::asio::read/write/read_until
// and their async_ forms work on it. TLS is OpenSSL's on the socket itself (no Asio ssl::stream:
// the library keeps no per-connection TLS buffers). Async operations complete through the
// stream's executor; one read and one write may be pending at a time.
class IMAP_OAUTH2_PROXY_API TlsStream {
 public:
  using executor_type = boost::asio::any_io_executor;
  using Handler = std::function<void(boost::system::error_code, std::size_t)>;

  TlsStream(TlsStream&&) noexcept;
  TlsStream& operator=(TlsStream&&) noexcept;
  ~TlsStream();  // closes the connection (no LOGOUT)

  executor_type get_executor();
  // The TLS connection (peer certificate, version); owned by the stream.
  SSL* native_handle();
  // The underlying socket (for its options, or to close it).
  boost::asio::ip::tcp::socket& lowest_layer();

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    return read_one(first_buffer<boost::asio::mutable_buffer>(buffers), ec);
  }
  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    const auto n = read_some(buffers, ec);
    boost::asio::detail::throw_error(ec, "read_some");
    return n;
  }
  template <class ConstBufferSequence>
  std::size_t write_some(const ConstBufferSequence& buffers, boost::system::error_code& ec) {
    return write_one(first_buffer<boost::asio::const_buffer>(buffers), ec);
  }
  template <class ConstBufferSequence>
  std::size_t write_some(const ConstBufferSequence& buffers) {
    boost::system::error_code ec;
    const auto n = write_some(buffers, ec);
    boost::asio::detail::throw_error(ec, "write_some");
    return n;
  }

  template <class MutableBufferSequence, class ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    return boost::asio::async_initiate<ReadToken, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, boost::asio::mutable_buffer buffer) {
          start_read(buffer, wrap(std::move(handler)));
        },
        token, first_buffer<boost::asio::mutable_buffer>(buffers));
  }
  template <class ConstBufferSequence, class WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return boost::asio::async_initiate<WriteToken, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, boost::asio::const_buffer buffer) {
          start_write(buffer, wrap(std::move(handler)));
        },
        token, first_buffer<boost::asio::const_buffer>(buffers));
  }

  struct Impl;
  explicit TlsStream(std::unique_ptr<Impl> impl);

 private:
  template <class Buffer, class Sequence>
  static Buffer first_buffer(const Sequence& buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      if (Buffer b(*it); b.size() != 0) {
        return b;
      }
    }
    return Buffer();
  }
  // A copyable callable that runs the (possibly move-only) handler on its associated executor,
  // with outstanding work on it until then.
  template <class H>
  Handler wrap(H handler) {
    auto executor = boost::asio::get_associated_executor(handler, get_executor());
    auto work = boost::asio::make_work_guard(executor);
    auto shared =
        std::make_shared<std::pair<H, decltype(work)>>(std::move(handler), std::move(work));
    return [shared](boost::system::error_code ec, std::size_t n) {
      auto ex = shared->second.get_executor();
      boost::asio::dispatch(ex, [shared, ec, n]() mutable {
        auto h = std::move(shared->first);
        shared->second.reset();
        std::move(h)(ec, n);
      });
    };
  }
  std::size_t read_one(boost::asio::mutable_buffer buffer, boost::system::error_code& ec);
  std::size_t write_one(boost::asio::const_buffer buffer, boost::system::error_code& ec);
  void start_read(boost::asio::mutable_buffer buffer, Handler done);
  void start_write(boost::asio::const_buffer buffer, Handler done);

  std::unique_ptr<Impl> impl_;
};

// What release_stream() hands over.
struct ReleasedStream {
  // The io_context the stream belongs to when it came from get_imap_connection() (blocking
  // calls on the stream need no run(); async ones run it); null when from
  // async_get_imap_connection() (the stream is on the caller's executor). First, so that it
  // outlives the stream.
  std::shared_ptr<boost::asio::io_context> io_context;
  std::unique_ptr<TlsStream> stream;  // authenticated, TLS active
  std::string buffered;  // server bytes read already that no response returned yet: read them first
};

// Called with each untagged response during IDLE; return false to end the IDLE.
using IdleCallback = std::function<bool(const UntaggedResponse&)>;

// An authenticated IMAP connection. Move-only. A connection from get_imap_connection() has the
// blocking methods; one from async_get_imap_connection() has the async_ ones (a call of the
// other kind throws ErrorKind::usage). Not thread-safe: one call at a time.
class IMAP_OAUTH2_PROXY_API ImapConnection {
 public:
  // A closed connection (Asio's co_spawn needs a default-constructible result): assign one from
  // get_imap_connection() to use it.
  ImapConnection() noexcept;
  ImapConnection(ImapConnection&&) noexcept;
  ImapConnection& operator=(ImapConnection&&) noexcept;
  // Logs out unless done already (bounded by a few seconds; never throws) and records the
  // connection in the connection log. For an async connection this runs on its executor after
  // the destructor returns: keep the io_context running (or co_await async_logout() first).
  ~ImapConnection();

  // The account (normalized email) and the server's capabilities after login.
  [[nodiscard]] const std::string& account() const;
  [[nodiscard]] const std::vector<std::string>& capabilities() const;
  // False after logout(), release_stream() or a lost connection.
  [[nodiscard]] bool is_open() const;

  // Sends `command` (without tag and CRLF, e.g. `SELECT INBOX` or `UID FETCH 1:* (FLAGS)`) with a
  // tag it generates, and returns the tagged status with the untagged responses before it. A
  // NO or BAD is a Response, not an exception. Synchronizing literals in `command`
  // (`APPEND INBOX {5}\r\nhello`) wait for the server's continuation. Throws Error:
  // upstream_unavailable (connection lost, or no bytes within the timeout: the connection is
  // then closed), protocol, closed, usage.
  Response command(std::string_view command);
#if IMAP_OAUTH2_PROXY_ASYNC
  boost::asio::awaitable<Response> async_command(std::string_view command);
#endif

  // IDLE (RFC 2177): calls `on_update` with every untagged response until it returns false or
  // `max_wait` has passed, then sends DONE and returns IDLE's completion (with the untagged
  // responses that came after DONE). A server without IDLE answers BAD. Errors as command().
  Response idle(const IdleCallback& on_update,
                std::chrono::milliseconds max_wait = std::chrono::minutes(29));
#if IMAP_OAUTH2_PROXY_ASYNC
  boost::asio::awaitable<Response> async_idle(
      IdleCallback on_update, std::chrono::milliseconds max_wait = std::chrono::minutes(29));
#endif

  // LOGOUT and close (bounded by a few seconds), and the connection-log row. Never throws;
  // no-op when closed already.
  void logout() noexcept;
#if IMAP_OAUTH2_PROXY_ASYNC
  boost::asio::awaitable<void> async_logout();
#endif

  // Hands the TLS stream to code with its own IMAP client; the connection is then closed for
  // this object (the connection-log row is written now, with the bytes counted so far).
  // Throws ErrorKind::closed when there is no stream any more.
  ReleasedStream release_stream();

  struct Impl;
  explicit ImapConnection(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

// Connects to `email`'s mailbox and logs in, blocking. A token the server refuses is refreshed
// once and the login retried. Throws Error: needs_reauth, not_found, auth_rejected,
// upstream_unavailable, token_unavailable, config, storage, protocol.
IMAP_OAUTH2_PROXY_API ImapConnection get_imap_connection(std::string_view email,
                                                         const ConnectOptions& options = {});
IMAP_OAUTH2_PROXY_API ImapConnection get_imap_connection(std::string_view email,
                                                         const std::filesystem::path& config_file);

// The same for Asio programs: the connection lives on the awaiting coroutine's executor.
// Blocking work (database, Redis, token endpoint) runs on the library's own threads. The async_
// functions copy their arguments before they suspend; with GCC 12, still name an argument that
// owns memory (a std::function, a ConnectOptions with a path) before the co_await expression
// rather than building it inside (GCC PR 100611).
#if IMAP_OAUTH2_PROXY_ASYNC
IMAP_OAUTH2_PROXY_API boost::asio::awaitable<ImapConnection> async_get_imap_connection(
    std::string_view email, ConnectOptions options = {});
#endif

}  // namespace imap_oauth2_proxy
