// What the configuration says about secrets: kept apart from config.cpp, which the config
// fuzzer compiles on its own, because it needs the Redis URL parser (storage).

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "app/config.hpp"
#include "common/database_url.hpp"
#include "storage/token_cache.hpp"

namespace iop::app {

bool Config::holds_secret() const {
  if (!oauth.client_secret.empty()) {
    return true;
  }
  for (const auto& [name, profile] : providers) {
    if (!profile.client_secret.empty()) {
      return true;
    }
  }
  if (!redis.url.empty()) {
    auto address = storage::parse_redis_url(redis.url);
    if (address && !address->password.empty()) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> config_file_warnings(const Config& config) {
  std::vector<std::string> warnings;
  struct stat st {};
  if (!config.file.empty() && config.holds_secret() && ::stat(config.file.c_str(), &st) == 0 &&
      (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    warnings.push_back(fmt::format(
        "{} holds a secret and other users can read it (mode {:04o}): run 'chmod 600 {}'",
        config.file.string(), st.st_mode & 0777, config.file.string()));
  }
  return warnings;
}

Result<Secret> database_password(const Config& config) {
  if (config.storage.password_file.empty()) {
    return Secret();
  }
  return read_database_password(config.storage.password_file);
}

Result<Secret> connection_log_password(const Config& config) {
  if (!is_postgres_url(config.storage.connection_log.native())) {
    return Secret();
  }
  return database_password(config);
}

Result<Secret> read_database_password(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return fail(Errc::config_error,
                fmt::format("[storage] password_file {} cannot be read: create it (mode 600) "
                            "holding the database password",
                            path.string()));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return fail(Errc::config_error,
                fmt::format("[storage] password_file {} can be read by other users (mode {:04o}): "
                            "run 'chmod 600 {}'",
                            path.string(), st.st_mode & 0777, path.string()));
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) {
    return fail(Errc::config_error,
                fmt::format("[storage] password_file {} cannot be read", path.string()));
  }
  std::string password = std::move(text).str();
  if (password.ends_with("\r\n")) {
    password.resize(password.size() - 2);
  } else if (password.ends_with('\n')) {
    password.pop_back();
  }
  return Secret(std::move(password));
}

}  // namespace iop::app
