#pragma once
// Counts the messages an SMTP upstream accepted in a relayed session, for the connection log
// (issue #11): it follows both directions of the byte stream without changing them. Pure.
//
// Client side (RFC 5321 §4.1.1, RFC 3030): command lines; after the server's 354 to DATA, the
// message up to the line "." (CRLF "." CRLF, as at Exchange; a bare LF ends nothing here, while
// Dovecot 2.3 also ends data at CRLF "." LF, so a message a client ends that way there is not
// counted, and the count stops following the session); after "BDAT n [LAST]", n bytes of chunk.
// Server side: one reply per command, in the order the commands were sent (RFC 2920 §3.1,
// pipelining keeps that order). A message counts when the reply to its end of data (the final dot,
// or BDAT LAST) is 2xx.
//
// Anything it cannot follow (an over-long line, an unreadable reply) stops the count; what was
// counted until then stays.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "proxy/smtp_reply.hpp"

namespace iop::proxy::smtp {

class TransactionCounter {
 public:
  void client_bytes(std::string_view bytes);
  void server_bytes(std::string_view bytes);

  // Messages the upstream accepted (2xx to the end of their data).
  [[nodiscard]] std::int64_t accepted() const { return accepted_; }
  // Whether the count stopped following the stream (see above).
  [[nodiscard]] bool lost() const { return lost_; }

 private:
  enum class Expect { other, data, data_end, bdat, bdat_last };
  enum class Mode { command, data, chunk };

  void command(std::string_view line);
  void data_bytes(std::string_view& bytes);

  Mode mode_ = Mode::command;
  std::string line_;
  std::uint64_t chunk_left_ = 0;
  // Inside a message: how far the end "\r\n.\r\n" is matched; the DATA line's CRLF counts as
  // the first CRLF, so an empty message is just ".\r\n".
  int end_match_ = 2;
  bool data_pending_ = false;  // DATA sent; its 354 not seen yet
  std::deque<Expect> expected_;
  ReplyReader replies_;
  std::int64_t accepted_ = 0;
  bool lost_ = false;
};

}  // namespace iop::proxy::smtp
