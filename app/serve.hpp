#pragma once

#include "app/services.hpp"
#include "proxy/session.hpp"

namespace iop::app {

// Runs the proxy until SIGINT or SIGTERM: the listeners (generating a local certificate when
// none is configured), the sessions, and the token service's background refresher. On a signal
// it stops accepting, lets sessions finish for [server] shutdown_grace, then closes them.
// Returns the exit code.
int serve(Services& services);

// The proxy's settings from the configuration.
proxy::ProxySettings proxy_settings(const Config& config);

}  // namespace iop::app
