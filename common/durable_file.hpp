#pragma once
// Making file-system changes survive a crash. I/O: part of `common`, not `common_core`.

#include <filesystem>

namespace iop {

// fsyncs the folder `dir` ("" is the current folder), so that a file created in it or renamed
// into it is still there after a crash (fsync(2): syncing the file does not sync its directory
// entry). False if the folder cannot be opened or synced; errno tells why.
bool fsync_dir(const std::filesystem::path& dir);

}  // namespace iop
