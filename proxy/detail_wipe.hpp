#pragma once
// Overwrites the bytes of a std::string that held secret material (a password, a SASL message)
// before the string is reused or freed. Shared by the proxy_core files; no I/O.

#include <cstddef>
#include <string>

namespace iop::proxy::detail {

// Zeroes every byte `s` owns, including those past size() left by earlier contents (a moved-from
// short string keeps its bytes in the small buffer), then empties it. The volatile stores keep the
// compiler from dropping the writes as dead.
inline void wipe(std::string& s) noexcept {
  s.resize(s.capacity());
  volatile char* p = s.data();
  for (std::size_t i = 0; i < s.size(); ++i) {
    p[i] = 0;
  }
  s.clear();
}

}  // namespace iop::proxy::detail
