#pragma once
// The command line: parses arguments and runs one subcommand.

#include <iosfwd>

namespace iop::app {

// Runs the command line. Returns the process exit code: 0 on success, 1 with a one-line reason
// on stderr otherwise (2 for usage errors).
int run_cli(int argc, char** argv);

}  // namespace iop::app
