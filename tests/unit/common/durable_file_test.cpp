#include "common/durable_file.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

namespace iop {
namespace {

namespace fs = std::filesystem;

TEST(FsyncDir, SyncsAnExistingFolder) {
  const fs::path dir = fs::temp_directory_path() / "iop-fsync-dir-test";
  fs::create_directories(dir);
  EXPECT_TRUE(fsync_dir(dir));
  EXPECT_TRUE(fsync_dir(""));  // the current folder
  fs::remove_all(dir);
}

TEST(FsyncDir, FailsForAMissingFolderOrAFile) {
  const fs::path dir = fs::temp_directory_path() / "iop-fsync-dir-test-missing";
  fs::remove_all(dir);
  EXPECT_FALSE(fsync_dir(dir));
  EXPECT_EQ(errno, ENOENT);

  const fs::path file = fs::temp_directory_path() / "iop-fsync-dir-test-file";
  std::ofstream(file) << "x";
  EXPECT_FALSE(fsync_dir(file));  // O_DIRECTORY: a file is not a folder
  EXPECT_EQ(errno, ENOTDIR);
  fs::remove(file);
}

}  // namespace
}  // namespace iop
