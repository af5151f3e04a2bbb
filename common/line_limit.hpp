#pragma once
// The over-long test for a protocol line whose end has not arrived yet, for every line reader
// with a length limit: the SMTP reply reader and ServerMachine (proxy/), the client library's
// IMAP response reader (client/).

#include <cstddef>
#include <string_view>

namespace iop {

// True when `pending` (bytes of a line, no LF yet) already holds more than `max_line_bytes` of
// line content. A line of exactly the limit may have its CR in this read and its LF in the next,
// so a trailing CR is not counted: otherwise the read boundary would decide whether a line is
// accepted (found by smtp_fuzzer's and client_response_fuzzer's split checks).
[[nodiscard]] constexpr bool unfinished_line_too_long(std::string_view pending,
                                                      std::size_t max_line_bytes) {
  const std::size_t content = pending.size() - (pending.ends_with('\r') ? 1 : 0);
  return content > max_line_bytes;
}

}  // namespace iop
