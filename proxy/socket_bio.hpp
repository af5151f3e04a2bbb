#pragma once
// An OpenSSL BIO over a non-blocking Asio socket: recv/send on its descriptor, never SIGPIPE
// (MSG_NOSIGNAL: the client library runs inside applications that have not ignored it, and
// OpenSSL's own socket BIO uses write(2)), would-block as a retry, EOF reported to OpenSSL as
// EOF. The socket is not closed with the BIO.
//
// It holds the socket object, not a descriptor number, and asks it for its descriptor on every
// call: a coroutine resuming after someone closed the socket (a deadline, a shutdown) fails with
// EBADF instead of reading or writing whatever connection has reused the number since.
//
// Sends may be held back (MSG_MORE) while a write of many records is under way: OpenSSL hands
// the BIO one 16 KiB record per call, and each send on its own is a TCP push, a segment and a
// wake-up of the receiver (on loopback, the receiver's TCP processing runs in the sender's
// send). Held back, they leave in full-sized segments.

#include <openssl/bio.h>

#include "common/asio.hpp"

namespace iop::proxy {

// A new BIO on `socket` (which must outlive it), or null when OpenSSL is out of memory.
// Ownership goes to the caller (or to the SSL it is set on).
BIO* new_socket_bio(tcp::socket& socket);

// While `on`, every send of `bio` (one made by new_socket_bio) says MSG_MORE: the kernel holds a
// partial segment for more. Turning it off pushes what is held (the caller's write is complete).
// Returns false when the push failed (errno set); the data stays queued and goes with the next
// send or the close.
bool hold_socket_bio_sends(BIO* bio, bool on);

}  // namespace iop::proxy
