#pragma once
// An upstream connection parked until a client login takes it: the mechanics shared by the
// pre-warm pool (proxy/prewarm.hpp: logged in, one per account) and the spare pool
// (proxy/spare_pool.hpp: TLS up, not logged in, one per upstream server).
//
// A parked connection lives on its home executor (the worker it was made on) and keeps a
// readability wait pending (ImapStream::wait_readable: no buffer held, cancellable at any time).
// So a server close or BYE is noticed and the connection dropped; other bytes the server sends
// meanwhile are kept in `pending` for whoever takes it. A claim hands the stream over only once
// the watcher has let go of it.
//
// Everything below `timer` is touched only on `home`.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/asio.hpp"
#include "proxy/imap_stream.hpp"

namespace iop::proxy {

struct ParkedStream {
  explicit ParkedStream(const net::any_io_executor& executor);

  net::any_io_executor home;
  std::unique_ptr<ImapStream> stream;
  std::string pending;        // server bytes not yet consumed, owed to the taker first
  net::steady_timer timer;    // the owner's retirement timer (cancelled by claim and close)
  net::steady_timer handoff;  // a claim waits on it until the watcher has let go of the stream
  bool claimed = false;       // someone has the stream: the watcher must not touch it again
  bool closing = false;       // retire, discard or shutdown asked: the watcher closes it
  bool server_closed = false;
  std::string why;  // why it was closed, for the log
};

// From any thread: asks the watcher (on the home executor) to close `parked`, unless it is
// claimed or closing already.
void close_parked(const std::shared_ptr<ParkedStream>& parked, std::string why);

// On the home executor, from the retirement timer's handler: starts closing unless claimed or
// closing already.
void retire_parked(ParkedStream& parked, std::string why);

// On the home executor: takes the stream from its watcher (true; the caller then moves
// `stream` and `pending` out), or false when it is claimed, closing or gone already. A
// reference: the caller holds the shared_ptr (a converted shared_ptr temporary in a co_await
// expression is what GCC 12 may destroy twice, PR 100611).
awaitable<bool> claim_parked(ParkedStream& parked);

// On the home executor, for as long as the connection is parked: returns true once claimed
// (the stream is the claimer's), false once it must be closed (`why` and `server_closed` say
// why; the caller unparks it, then calls close_parked_stream).
awaitable<bool> watch_parked(ParkedStream& parked);

// Closes a stream that will not be used: `w1 LOGOUT` first when `logout`, then the TLS close,
// bounded by 1 s (a peer that never answers our close_notify must not hold a worker).
awaitable<void> close_parked_stream(ImapStream& stream, bool logout);

// Moves `stream`'s socket to `executor` (same descriptor, same TLS state), so a connection made
// on one worker thread can be relayed by a session on another. Must not be called with an
// operation pending on the stream. Errors in `ec` (the stream is then unusable).
void move_to_executor(ImapStream& stream, const net::any_io_executor& executor,
                      boost::system::error_code& ec);

}  // namespace iop::proxy
