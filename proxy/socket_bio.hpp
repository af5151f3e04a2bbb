#pragma once
// An OpenSSL BIO over a non-blocking Asio socket: recv/send on its descriptor, never SIGPIPE
// (MSG_NOSIGNAL: the client library runs inside applications that have not ignored it, and
// OpenSSL's own socket BIO uses write(2)), would-block as a retry, EOF reported to OpenSSL as
// EOF. The socket is not closed with the BIO.
//
// It holds the socket object, not a descriptor number, and asks it for its descriptor on every
// call: a coroutine resuming after someone closed the socket (a deadline, a shutdown) fails with
// EBADF instead of reading or writing whatever connection has reused the number since.

#include <openssl/bio.h>

#include "common/asio.hpp"

namespace iop::proxy {

// A new BIO on `socket` (which must outlive it), or null when OpenSSL is out of memory.
// Ownership goes to the caller (or to the SSL it is set on).
BIO* new_socket_bio(tcp::socket& socket);

}  // namespace iop::proxy
