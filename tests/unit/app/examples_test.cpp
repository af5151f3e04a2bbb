// The example configs in dist/examples (installed to share/imap-oauth2-proxy/examples): each
// parses, keeps its data under the service's state folder with absolute paths, and still works
// for a personal setup once the documented sed makes those paths relative.

#include <gtest/gtest.h>

#include <algorithm>

#include <fstream>
#include <regex>
#include <sstream>

#include "app/config.hpp"

namespace iop::app {
namespace {
namespace fs = std::filesystem;

const fs::path examples_dir = fs::path(IOP_SOURCE_DIR) / "dist/examples";
const fs::path state_dir = "/var/lib/imap-oauth2-proxy";

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<fs::path> examples() {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(examples_dir)) {
    if (entry.path().extension() == ".toml") {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// [providers.NAME] sections arrive with per-account provider profiles (issue #6 §1); until the
// parser knows them, a file with one is checked up to that point only.
TEST(Examples, TheFourProvidersAreThere) {
  std::vector<std::string> names;
  for (const auto& f : examples()) {
    names.push_back(f.filename().string());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"gmail.toml", "office365-app-only.toml",
                                             "office365-delegated.toml", "outlook-com.toml"}));
}

TEST(Examples, ParseWithAbsoluteStatePaths) {
  for (const auto& file : examples()) {
    SCOPED_TRACE(file.filename().string());
    const auto text = read_file(file);
    // /etc/imap-oauth2-proxy as base: relative paths would land there, where the service
    // cannot write (ProtectSystem=strict) and which its credential copy does not share.
    const auto c = parse_config(text, "/etc/imap-oauth2-proxy", file.string());
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->storage.database, state_dir / "data/credentials.db");
    EXPECT_EQ(c->storage.key_file, state_dir / "data/master.key");
    EXPECT_EQ(c->server.certificate, state_dir / "certs/server.crt");
    EXPECT_EQ(c->server.private_key, state_dir / "certs/server.key");
    // The client id to replace is in [oauth] or in the provider profile the example sets up.
    const bool has_client = std::any_of(c->providers.begin(), c->providers.end(),
                                        [](const auto& p) { return !p.second.client_id.empty(); });
    EXPECT_TRUE(has_client) << "a visible placeholder to replace";
  }
}

TEST(Examples, TheDocumentedSedGivesAPersonalConfig) {
  for (const auto& file : examples()) {
    SCOPED_TRACE(file.filename().string());
    // sed 's|/var/lib/imap-oauth2-proxy/||'
    const auto text =
        std::regex_replace(read_file(file), std::regex("/var/lib/imap-oauth2-proxy/"), "");
    const auto c = parse_config(text, "/home/alice/.config/imap-oauth2-proxy", file.string());
    ASSERT_TRUE(c) << c.error().message;
    const auto d = default_config("/home/alice/.config/imap-oauth2-proxy");
    EXPECT_EQ(c->storage.database, d.storage.database);
    EXPECT_EQ(c->storage.key_file, d.storage.key_file);
    EXPECT_EQ(c->server.certificate, d.server.certificate);
    EXPECT_EQ(c->server.private_key, d.server.private_key);
  }
}

TEST(Examples, EachStartsWithItsCommands) {
  for (const auto& file : examples()) {
    SCOPED_TRACE(file.filename().string());
    const auto text = read_file(file);
    const auto install = "/usr/share/imap-oauth2-proxy/examples/" + file.filename().string();
    for (const std::string& needle :
         {install, std::string("imap-oauth2-proxy init --dir"),
          std::string("imap-oauth2-proxy account add"), std::string("imap-oauth2-proxy serve"),
          std::string("systemctl enable --now imap-oauth2-proxy"),
          std::string("sed 's|/var/lib/imap-oauth2-proxy/||'")}) {
      EXPECT_NE(text.find(needle), std::string::npos) << needle;
    }
  }
}

}  // namespace
}  // namespace iop::app
