#pragma once
// An OpenSSL BIO over a non-blocking socket descriptor that Asio owns: recv/send on the
// descriptor, never SIGPIPE (MSG_NOSIGNAL: the client library runs inside applications that
// have not ignored it, and OpenSSL's own socket BIO uses write(2)), would-block as a retry,
// EOF reported to OpenSSL as EOF. The descriptor is not closed with the BIO.

#include <openssl/bio.h>

namespace iop::proxy {

// A new BIO on `fd`, or null when OpenSSL is out of memory. Ownership goes to the caller (or to
// the SSL it is set on).
BIO* new_socket_bio(int fd);

}  // namespace iop::proxy
