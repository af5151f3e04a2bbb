#pragma once
// The program's version (CMake's project(VERSION)) and the git revision it was built from.
// Defined in a .cpp generated at build time by cmake/write_version.cmake.

#include <string>
#include <string_view>

namespace iop::app {

std::string_view version();       // "0.1.0"
std::string_view git_revision();  // "abcdef1", "abcdef1-dirty", or "unknown" outside a checkout

// "imap-oauth2-proxy 0.1.0 (git abcdef1)": what --version prints.
std::string version_line();

}  // namespace iop::app
