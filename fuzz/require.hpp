#pragma once
// The property check every fuzz target uses: aborts (libFuzzer then saves the input) and first
// prints the file and line of the check that failed, so a CI crash report says which property
// broke without a rebuild.

#include <cstdio>
#include <cstdlib>
#include <source_location>

namespace iop::fuzz {

inline void require(bool condition, std::source_location where = std::source_location::current()) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed at %s:%u\n", where.file_name(),
                 static_cast<unsigned>(where.line()));
    std::abort();
  }
}

}  // namespace iop::fuzz
