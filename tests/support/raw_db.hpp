#pragma once
// Raw SQL on a database file, bypassing the stores, as an attacker or a bug would: what the
// storage tests use to tamper with rows, roll schemas back and look at what is stored.

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>
#include <vector>

namespace iop::test {

class RawDb {
 public:
  explicit RawDb(const std::filesystem::path& path) {
    EXPECT_EQ(
        sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr),
        SQLITE_OK);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  // Runs `sql`; returns SQLite's error message, empty on success.
  std::string try_exec(const std::string& sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    std::string message = rc == SQLITE_OK ? "" : (err != nullptr ? err : "error");
    sqlite3_free(err);
    return message;
  }

  void exec(const std::string& sql) { EXPECT_EQ(try_exec(sql), "") << " in: " << sql; }

  // The append-only triggers stop casual edits; an attacker simply drops them first.
  void tamper(const std::string& sql) {
    exec(
        "DROP TRIGGER IF EXISTS connection_log_no_update;"
        "DROP TRIGGER IF EXISTS connection_log_no_delete;" +
        sql);
  }

  // Runs `sql` with `blobs` bound to ?1, ?2, ...
  void exec_with_blobs(const std::string& sql, const std::vector<std::string>& blobs) {
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    for (std::size_t i = 0; i < blobs.size(); ++i) {
      sqlite3_bind_blob(stmt, static_cast<int>(i + 1), blobs[i].data(),
                        static_cast<int>(blobs[i].size()), SQLITE_TRANSIENT);
    }
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db_);
    sqlite3_finalize(stmt);
  }

  // The first column of the first row, as bytes.
  std::string query_blob(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    std::string out;
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      const void* data = sqlite3_column_blob(stmt, 0);
      out.assign(static_cast<const char*>(data),
                 static_cast<std::size_t>(sqlite3_column_bytes(stmt, 0)));
    }
    sqlite3_finalize(stmt);
    return out;
  }

  // The first column of the first row, as text.
  std::string query(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    std::string out;
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      out = text != nullptr ? reinterpret_cast<const char*>(text) : "";
    }
    sqlite3_finalize(stmt);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace iop::test
