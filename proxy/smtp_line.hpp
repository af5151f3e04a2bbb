#pragma once
// The over-long test for an SMTP line whose LF has not arrived yet, shared by the reply reader
// (upstream side) and the ServerMachine (client side).

#include <cstddef>
#include <string_view>

namespace iop::proxy::smtp {

// True when `pending` (bytes of a line, no LF yet) already holds more than `max_line_bytes` of
// line content. A line of exactly the limit may have its CR in this read and its LF in the next,
// so a trailing CR is not counted: otherwise the read boundary would decide whether a line is
// accepted (found by smtp_fuzzer's split check).
[[nodiscard]] constexpr bool unfinished_line_too_long(std::string_view pending,
                                                      std::size_t max_line_bytes) {
  const std::size_t content = pending.size() - (pending.ends_with('\r') ? 1 : 0);
  return content > max_line_bytes;
}

}  // namespace iop::proxy::smtp
