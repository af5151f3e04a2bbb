#pragma once

#include "app/services.hpp"

namespace iop::app {

// Runs the long-lived process until SIGINT or SIGTERM: the token service with its background
// refresher. Returns the exit code.
int serve(Services& services);

}  // namespace iop::app
