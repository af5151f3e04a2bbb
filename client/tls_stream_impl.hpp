#pragma once
// The inside of the public TlsStream: the released connection's stream.

#include <memory>

#include "common/asio.hpp"
#include "imap_oauth2_proxy/client.hpp"
#include "proxy/imap_stream.hpp"

namespace imap_oauth2_proxy {

struct __attribute__((visibility("hidden"))) TlsStream::Impl {
  std::shared_ptr<iop::proxy::ImapStream> stream;
};

}  // namespace imap_oauth2_proxy
