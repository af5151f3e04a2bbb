#include "client/command_parts.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iop::client {
namespace {

std::vector<std::string> split(std::string_view command) {
  std::string error;
  const auto parts = split_at_literals(command, error);
  if (!parts) {
    return {"error: " + error};
  }
  return {parts->begin(), parts->end()};
}

TEST(CommandParts, APlainCommandIsOnePart) {
  EXPECT_EQ(split("L1 SELECT INBOX\r\n"), std::vector<std::string>{"L1 SELECT INBOX\r\n"});
}

TEST(CommandParts, SynchronizingLiteralsWaitForTheServer) {
  // RFC 9051 §6.3.12: APPEND with a literal; the client sends the bytes after "+".
  EXPECT_EQ(split("L2 APPEND INBOX (\\Seen) {11}\r\nHello\r\nWorld\r\n"),
            (std::vector<std::string>{"L2 APPEND INBOX (\\Seen) {11}\r\n", "Hello\r\nWorld\r\n"}));
  // Two literals; the bytes of the first look like a literal length and a CRLF.
  EXPECT_EQ(split("L3 LOGIN {7}\r\na{2}\r\nb {1}\r\nx\r\n"),
            (std::vector<std::string>{"L3 LOGIN {7}\r\n", "a{2}\r\nb {1}\r\n", "x\r\n"}));
  // literal8 (RFC 3516) synchronizes too.
  EXPECT_EQ(split(std::string_view("L4 APPEND INBOX ~{2}\r\n\0\1\r\n", 26)),
            (std::vector<std::string>{"L4 APPEND INBOX ~{2}\r\n", std::string("\0\1\r\n", 4)}));
}

TEST(CommandParts, NonSynchronizingLiteralsGoAtOnce) {
  EXPECT_EQ(split("L5 APPEND INBOX {5+}\r\nHello\r\n"),
            std::vector<std::string>{"L5 APPEND INBOX {5+}\r\nHello\r\n"});
}

TEST(CommandParts, RefusesWhatIsNotOneCommand) {
  EXPECT_EQ(split("L6 NOOP\r\nL7 NOOP\r\n"),
            std::vector<std::string>{
                "error: a CRLF outside a literal ends the command: send one command at a time"});
  EXPECT_EQ(split("L8 NOOP"), std::vector<std::string>{"error: a command must end with CRLF"});
  EXPECT_EQ(
      split("L9 APPEND INBOX {50}\r\nshort\r\n"),
      std::vector<std::string>{"error: a literal announces more bytes than the command holds"});
}

}  // namespace
}  // namespace iop::client
