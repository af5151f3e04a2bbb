#include "client/response_reader.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iop::client {
namespace {

// Every complete response of `chunks`, fed in order, one per line: "U|text|lit1|lit2",
// "C|text" or "T|tag|status|status text"; then the error. Literal bytes are shown escaped
// (CR as \r, LF as \n, NUL as \0) so the expectations stay readable.
std::string escaped(std::string_view bytes) {
  std::string out;
  for (const char c : bytes) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\0') {
      out += "\\0";
    } else {
      out += c;
    }
  }
  return out;
}

std::string read_all(const std::vector<std::string_view>& chunks, ResponseLimits limits = {}) {
  ResponseReader reader(limits);
  std::string out;
  for (const auto chunk : chunks) {
    reader.feed(chunk);
    while (auto r = reader.next()) {
      switch (r->kind) {
        case ResponseKind::untagged:
          out += "U|" + escaped(r->text);
          for (const auto& l : r->literals) {
            out += "|" + escaped(l);
          }
          break;
        case ResponseKind::continuation:
          out += "C|" + r->text;
          break;
        case ResponseKind::tagged:
          out += "T|" + r->tag + "|" +
                 (r->status == TaggedStatus::ok   ? "OK"
                  : r->status == TaggedStatus::no ? "NO"
                                                  : "BAD") +
                 "|" + r->status_text;
          break;
      }
      out += "\n";
    }
  }
  if (reader.error()) {
    out += "error: " + *reader.error() + "\n";
  }
  return out;
}

// Every split in two, and one byte at a time, gives the same as the whole.
void expect_at_every_split(std::string_view transcript, const std::string& expected,
                           ResponseLimits limits = {}) {
  EXPECT_EQ(read_all({transcript}, limits), expected);
  for (std::size_t i = 0; i <= transcript.size(); ++i) {
    ASSERT_EQ(read_all({transcript.substr(0, i), transcript.substr(i)}, limits), expected)
        << "split at " << i;
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < transcript.size(); ++i) {
    bytes.push_back(transcript.substr(i, 1));
  }
  EXPECT_EQ(read_all(bytes, limits), expected);
}

TEST(ResponseReader, SelectTranscriptAtEverySplit) {
  // RFC 9051 §6.3.2's example, as Dovecot answers it.
  constexpr std::string_view transcript =
      "* 172 EXISTS\r\n"
      "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
      "* OK [UIDNEXT 4392] Predicted next UID\r\n"
      "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
      "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"
      "* LIST () \"/\" INBOX\r\n"
      "A142 OK [READ-WRITE] SELECT completed\r\n";
  expect_at_every_split(transcript,
                        "U|* 172 EXISTS\n"
                        "U|* OK [UIDVALIDITY 3857529045] UIDs valid\n"
                        "U|* OK [UIDNEXT 4392] Predicted next UID\n"
                        "U|* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n"
                        "U|* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\n"
                        "U|* LIST () \"/\" INBOX\n"
                        "T|A142|OK|[READ-WRITE] SELECT completed\n");
}

TEST(ResponseReader, LiteralsAreBinarySafeAtEverySplit) {
  // A literal holding CRLF, a NUL, a lone LF and what looks like a tagged line and another
  // literal's length; then a second literal in the same response, and literal8 (RFC 3516).
  const std::string body("a\r\nL9 OK fake\r\nb{3}\r\n\0\n", 24);
  const std::string transcript = "* 1 FETCH (BODY[] {" + std::to_string(body.size()) + "}\r\n" +
                                 body + " BODY[HEADER] {0}\r\n FLAGS (\\Seen))\r\n" +
                                 "* 2 FETCH (BINARY[1] ~{3}\r\nxyz)\r\n" +
                                 "L1 ok Fetch completed.\r\n";
  expect_at_every_split(transcript,
                        "U|* 1 FETCH (BODY[] {24}\\r\\n BODY[HEADER] {0}\\r\\n FLAGS (\\Seen))|" +
                            escaped(body) +
                            "|\n"
                            "U|* 2 FETCH (BINARY[1] ~{3}\\r\\n)|xyz\n"
                            "T|L1|OK|Fetch completed.\n");
}

TEST(ResponseReader, NonSynchronizingLiteralAndLiteralAtEndOfResponse) {
  expect_at_every_split("* 3 FETCH (BODY[TEXT] {4+}\r\nabcd)\r\n* SEARCH\r\n",
                        "U|* 3 FETCH (BODY[TEXT] {4+}\\r\\n)|abcd\nU|* SEARCH\n");
  // A literal that ends the line: the response continues with an empty line.
  expect_at_every_split("* LIST () \"/\" {5}\r\nSent \r\n", "U|* LIST () \"/\" {5}\\r\\n|Sent \n");
}

TEST(ResponseReader, ContinuationsAndIdleUpdates) {
  expect_at_every_split("+ idling\r\n* 4 EXISTS\r\n* 1 RECENT\r\n+\r\nL2 OK Idle done\r\n",
                        "C|+ idling\nU|* 4 EXISTS\nU|* 1 RECENT\nC|+\nT|L2|OK|Idle done\n");
}

TEST(ResponseReader, TaggedStatusesAreCaseInsensitiveAndMayHaveNoText) {
  EXPECT_EQ(read_all({"a1 NO [TRYCREATE] no such mailbox\r\na2 bad\r\na3 Ok\r\n"}),
            "T|a1|NO|[TRYCREATE] no such mailbox\nT|a2|BAD|\nT|a3|OK|\n");
}

TEST(ResponseReader, MalformedResponsesAreErrors) {
  EXPECT_EQ(read_all({"a1 MAYBE\r\n"}), "error: tagged response without OK, NO or BAD\n");
  EXPECT_EQ(read_all({"garbage\r\n"}),
            "error: malformed response (neither untagged, continuation nor tagged)\n");
  EXPECT_EQ(read_all({" OK\r\n"}),
            "error: malformed response (neither untagged, continuation nor tagged)\n");
  // After an error nothing more comes out.
  EXPECT_EQ(read_all({"bad\r\n", "* 1 EXISTS\r\n"}),
            "error: malformed response (neither untagged, continuation nor tagged)\n");
}

TEST(ResponseReader, LimitsAreEnforced) {
  ResponseLimits limits;
  limits.max_line_bytes = 16;
  limits.max_literal_bytes = 8;
  limits.max_response_bytes = 30;
  EXPECT_EQ(read_all({"* 123456789012345678\r\n"}, limits), "error: response line too long\n");
  EXPECT_EQ(read_all({"* 12345678901234567"}, limits), "error: response line too long\n")
      << "also before the CRLF arrives";
  // A line of exactly the limit, its CR in one read and its LF in the next, is accepted
  // (client_response_fuzzer found the read boundary deciding).
  const std::string longest = "* 34567890123456\r\n";  // 16 bytes before CRLF
  for (std::size_t i = 0; i <= longest.size(); ++i) {
    EXPECT_EQ(
        read_all({std::string_view(longest).substr(0, i), std::string_view(longest).substr(i)},
                 limits),
        "U|* 34567890123456\n")
        << "split at " << i;
  }
  EXPECT_EQ(read_all({"* 1 FETCH {9}\r\n"}, limits), "error: literal too long\n");
  EXPECT_EQ(read_all({"* {99999999999999999999999}\r\n"}), "error: literal too long\n");
  EXPECT_EQ(read_all({"* A {8}\r\n12345678 {8}\r\n12345678\r\n"}, limits),
            "error: literal too long\n")
      << "the response as a whole is bounded";
  EXPECT_EQ(read_all({"* 1 FETCH {8}\r\n12345678)\r\n"}, limits),
            "U|* 1 FETCH {8}\\r\\n)|12345678\n");
}

TEST(ResponseReader, TrailingLiteralLength) {
  EXPECT_EQ(trailing_literal_length("* 1 FETCH (BODY[] {12}"), 12u);
  EXPECT_EQ(trailing_literal_length("A APPEND INBOX {5+}"), 5u);
  EXPECT_EQ(trailing_literal_length("* 1 FETCH (BINARY[] ~{0}"), 0u);
  EXPECT_FALSE(trailing_literal_length("* OK {12} not at the end"));
  EXPECT_FALSE(trailing_literal_length("* OK {}"));
  EXPECT_FALSE(trailing_literal_length("* OK {+}"));
  EXPECT_FALSE(trailing_literal_length("* OK {1a}"));
  EXPECT_FALSE(trailing_literal_length("* OK }"));
  EXPECT_EQ(trailing_literal_length("{99999999999999999999999}"), SIZE_MAX);
}

TEST(ResponseReader, TakeBufferedHandsOverWhatNoResponseReturned) {
  ResponseReader reader;
  reader.feed("* 1 EXISTS\r\n* 2 FETCH (BODY[] {10}\r\nabc");
  ASSERT_TRUE(reader.next());
  EXPECT_FALSE(reader.next());
  EXPECT_EQ(reader.buffered(), "* 2 FETCH (BODY[] {10}\r\nabc");
  EXPECT_EQ(reader.take_buffered(), "* 2 FETCH (BODY[] {10}\r\nabc");
  EXPECT_EQ(reader.buffered(), "");
  reader.feed("* 3 EXISTS\r\n");
  const auto r = reader.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->text, "* 3 EXISTS");
}

}  // namespace
}  // namespace iop::client
