// `cmake --install` into a DESTDIR (issue #6 §5): what lands where, with which modes, and a unit
// that `systemd-analyze verify` accepts. Also `--version`, and `init` under a permissive umask.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "tests/support/cli_env.hpp"

namespace iop::test {
namespace {
namespace fs = std::filesystem;

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) {
    ADD_FAILURE() << "no " << p;
    return 0;
  }
  return st.st_mode & 07777;
}

// A program in PATH, or empty.
fs::path find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const auto candidate = fs::path(dir) / name;
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return {};
}

constexpr std::string_view unit_rel = "usr/lib/systemd/system/imap-oauth2-proxy.service";

// One install per test binary run: the step is slow-ish and every test only reads the result.
class InstallTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dest_ = new TempDir();
    result_ = new CommandResult(
        run_command({"env", "DESTDIR=" + dest_->path().string(), IOP_CMAKE_COMMAND, "--install",
                     IOP_BINARY_DIR, "--prefix", "/usr"}));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete dest_;
  }
  void SetUp() override { ASSERT_EQ(result_->exit_code, 0) << result_->out << result_->err; }

  static fs::path root() { return dest_->path(); }

  static TempDir* dest_;
  static CommandResult* result_;
};
TempDir* InstallTest::dest_ = nullptr;
CommandResult* InstallTest::result_ = nullptr;

TEST_F(InstallTest, PutsEachFileInItsPlaceWithSaneModes) {
  EXPECT_EQ(mode_of(root() / "usr/bin/imap-oauth2-proxy"), 0755u);
  EXPECT_EQ(mode_of(root() / unit_rel), 0644u);
  for (const char* example :
       {"office365-delegated.toml", "office365-app-only.toml", "outlook-com.toml", "gmail.toml"}) {
    EXPECT_EQ(mode_of(root() / "usr/share/imap-oauth2-proxy/examples" / example), 0644u) << example;
  }
  for (const char* doc : {"README.md", "clients.md", "service.md"}) {
    EXPECT_EQ(mode_of(root() / "usr/share/doc/imap-oauth2-proxy" / doc), 0644u) << doc;
  }
  // Nothing lands outside the prefix (no /etc, no /var: those belong to the admin and systemd).
  for (const auto& entry : fs::directory_iterator(root())) {
    EXPECT_EQ(entry.path().filename(), "usr");
  }
}

TEST_F(InstallTest, TheInstalledBinaryRuns) {
  const auto r = run_command({(root() / "usr/bin/imap-oauth2-proxy").string(), "--version"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("imap-oauth2-proxy ", 0), 0u) << r.out;
}

TEST_F(InstallTest, UnitNamesTheInstalledPathsAndIsHardened) {
  const auto unit = read_file(root() / unit_rel);
  // Configured at install time: --prefix /usr, not the configure-time /usr/local.
  EXPECT_NE(unit.find("\nExecStart=/usr/bin/imap-oauth2-proxy serve --config "
                      "%d/imap-oauth2-proxy.toml\n"),
            std::string::npos)
      << unit;
  // Every installed path the unit mentions (binary, docs, examples) exists in the install.
  const std::regex usr_path(R"((/usr/[A-Za-z0-9._/-]*[A-Za-z0-9_]))");
  int paths = 0;
  for (std::sregex_iterator it(unit.begin(), unit.end(), usr_path), end; it != end; ++it) {
    ++paths;
    EXPECT_TRUE(fs::exists(root() / it->str(1).substr(1))) << it->str(1);
  }
  EXPECT_GE(paths, 3);
  for (const char* line :
       {"DynamicUser=yes", "StateDirectory=imap-oauth2-proxy",
        "ConfigurationDirectory=imap-oauth2-proxy", "ProtectSystem=strict", "ProtectHome=yes",
        "PrivateTmp=yes", "PrivateDevices=yes", "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "LimitNOFILE=65536",
        "CapabilityBoundingSet=", "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service",
        "UMask=0077", "Restart=on-failure",
        "LoadCredential=imap-oauth2-proxy.toml:/etc/imap-oauth2-proxy/imap-oauth2-proxy.toml"}) {
    EXPECT_NE(unit.find(std::string("\n") + line + "\n"), std::string::npos) << line;
  }
  EXPECT_EQ(unit.find("ExecReload="), std::string::npos) << "the proxy has no reload";
}

TEST_F(InstallTest, SystemdAnalyzeVerifiesTheUnit) {
  const auto analyze = find_in_path("systemd-analyze");
  if (analyze.empty()) {
    GTEST_SKIP() << "systemd-analyze is not installed (Debian package systemd)";
  }
  // verify insists that ExecStart's binary exists; the installed one lives under DESTDIR, so a
  // copy of the unit points there. Everything else is the installed text.
  TempDir dir;
  auto unit = read_file(root() / unit_rel);
  const std::string installed = "ExecStart=/usr/bin/imap-oauth2-proxy ";
  const auto at = unit.find(installed);
  ASSERT_NE(at, std::string::npos);
  unit.replace(at, installed.size(),
               "ExecStart=" + (root() / "usr/bin/imap-oauth2-proxy").string() + " ");
  const auto copy = dir.path() / "imap-oauth2-proxy.service";
  std::ofstream(copy) << unit;

  const auto r = run_command({analyze.string(), "verify", "--man=no", copy.string()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // verify exits 0 on unknown keys and bad values but reports them, naming the unit; the host's
  // own units may add unrelated noise.
  std::istringstream lines(r.out + r.err);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_EQ(line.find("imap-oauth2-proxy.service"), std::string::npos) << line;
  }
}

TEST(VersionFlag, PrintsVersionAndGitRevision) {
  const auto r = run_command({binary_path(), "--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::regex line(R"(imap-oauth2-proxy (\S+) \(git ([0-9a-f]{7,}(-dirty)?|unknown)\)\n)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(r.out, m, line)) << r.out;
  EXPECT_EQ(m.str(1), IOP_PROJECT_VERSION);
  if (fs::exists(fs::path(IOP_SOURCE_DIR) / ".git") && !find_in_path("git").empty()) {
    EXPECT_NE(m.str(2), "unknown") << "built from a git checkout";
  }
}

TEST(InitCommand, PrivateModesWhateverTheUmaskAndPrintsNextSteps) {
  TempDir tmp;
  const auto dir = tmp.path() / "new" / "conf";
  // umask 000 would leave every file and folder world-writable unless init sets modes itself.
  const auto r = run_command(
      {"/bin/sh", "-c", "umask 000; exec \"$0\" init --dir \"$1\"", binary_path(), dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(mode_of(tmp.path() / "new"), 0700u);
  EXPECT_EQ(mode_of(dir), 0700u);
  const auto config = dir / "imap-oauth2-proxy.toml";
  EXPECT_EQ(mode_of(config), 0600u);
  EXPECT_EQ(mode_of(dir / "data"), 0700u);
  EXPECT_EQ(mode_of(dir / "data/master.key"), 0600u);
  EXPECT_EQ(mode_of(dir / "certs"), 0700u);
  EXPECT_EQ(mode_of(dir / "certs/server.key"), 0600u);

  const auto steps = "next steps:\n  1. set [oauth] client_id in " + config.string() +
                     " (your app registration's Application ID)\n"
                     "  2. imap-oauth2-proxy account add you@example.com --config " +
                     config.string() + "\n";
  EXPECT_NE(r.out.find(steps), std::string::npos) << r.out;
  EXPECT_EQ(r.out.substr(r.out.size() - steps.size()), steps) << "the steps come last";

  // A second run keeps the config (and its mode) and prints the steps again.
  const auto again = run_command(
      {"/bin/sh", "-c", "umask 000; exec \"$0\" init --dir \"$1\"", binary_path(), dir.string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("kept existing " + config.string()), std::string::npos) << again.out;
  EXPECT_EQ(mode_of(config), 0600u);
  EXPECT_NE(again.out.find(steps), std::string::npos) << again.out;
}

}  // namespace
}  // namespace iop::test
