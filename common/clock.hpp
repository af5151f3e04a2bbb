#pragma once
// Wall-clock time as a parameter, so token decisions are testable without real time.

#include <chrono>
#include <cstdint>
#include <functional>

namespace iop {

using SystemTime = std::chrono::system_clock::time_point;
using WallClock = std::function<SystemTime()>;

inline WallClock system_wall_clock() {
  return [] { return std::chrono::system_clock::now(); };
}

inline std::int64_t to_unix_seconds(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

inline std::int64_t to_unix_millis(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

inline SystemTime from_unix_seconds(std::int64_t s) { return SystemTime(std::chrono::seconds(s)); }

}  // namespace iop
