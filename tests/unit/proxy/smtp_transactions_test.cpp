#include "proxy/smtp_transactions.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iop::proxy::smtp {
namespace {

// One exchange step: what the client sent, then what the server answered.
struct Step {
  std::string client;
  std::string server;
};

// Feeds the steps in order, the client's bytes of each cut at `split`.
std::int64_t count(const std::vector<Step>& steps, std::size_t split = 0) {
  TransactionCounter counter;
  for (const auto& step : steps) {
    const std::string_view c = step.client;
    const auto at = std::min(split, c.size());
    counter.client_bytes(c.substr(0, at));
    counter.client_bytes(c.substr(at));
    counter.server_bytes(step.server);
  }
  EXPECT_FALSE(counter.lost());
  return counter.accepted();
}

const std::vector<Step> two_messages = {
    {"MAIL FROM:<a@b>\r\n", "250 2.1.0 Ok\r\n"},
    {"RCPT TO:<c@d>\r\n", "250 2.1.5 Ok\r\n"},
    {"DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"},
    // A line holding only "." inside the message is dot-stuffed ("..") and ends nothing; a bare
    // LF before a dot ends nothing either (SMTP smuggling).
    {"Subject: x\r\n\r\n..\r\nbody\n.\nmore\r\n.\r\n", "250 2.0.0 Ok: queued\r\n"},
    {"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", "250 Ok\r\n250 Ok\r\n354 go ahead\r\n"},
    {".\r\n", "250 2.0.0 Ok: queued\r\n"},  // an empty message
    {"QUIT\r\n", "221 Bye\r\n"},
};

TEST(SmtpTransactionCounter, CountsAcceptedDataTransactionsAtEverySplit) {
  for (std::size_t split = 0; split < 40; ++split) {
    EXPECT_EQ(count(two_messages, split), 2) << "split at " << split;
  }
}

TEST(SmtpTransactionCounter, RefusedMessagesAndRefusedDataDoNotCount) {
  EXPECT_EQ(
      count({{"MAIL FROM:<a@b>\r\n", "250 Ok\r\n"},
             {"DATA\r\n", "554 5.5.1 No valid recipients\r\n"},
             // Not in data mode: this is a command line, refused.
             {".\r\n", "502 5.5.2 Error\r\n"},
             {"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", "250 Ok\r\n250 Ok\r\n354 Go\r\n"},
             {"x\r\n.\r\n", "552 5.3.4 Message too big\r\n"}}),
      0);
}

TEST(SmtpTransactionCounter, BdatChunksAreSkippedAndLastCounts) {
  // The chunk holds a line "DATA" and ".": neither is read as a command or an end.
  EXPECT_EQ(count({{"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 13\r\nDATA\r\n.\r\nxxxx",
                    "250 Ok\r\n250 Ok\r\n250 2.0.0 13 octets\r\n"},
                   {"BDAT 3 LAST\r\nabc", "250 2.0.0 Message queued\r\n"},
                   {"BDAT 0 LAST\r\n", "503 5.5.1 No transaction\r\n"}}),
            1);
}

TEST(SmtpTransactionCounter, MultilineRepliesAndUnsolicitedOnes) {
  EXPECT_EQ(
      count({{"EHLO x\r\n", "250-h\r\n250-PIPELINING\r\n250 8BITMIME\r\n"},
             {"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", "250 Ok\r\n250 Ok\r\n354 Go\r\n"},
             {"m\r\n.\r\n", "250 queued\r\n421 4.4.2 Timeout, closing\r\n"}}),
      1);
}

TEST(SmtpTransactionCounter, StopsFollowingWhatItCannotRead) {
  TransactionCounter counter;
  counter.client_bytes("NOOP\r\n");
  counter.server_bytes("garbage\r\n");
  EXPECT_TRUE(counter.lost());
  TransactionCounter long_line;
  long_line.client_bytes(std::string(100'000, 'x'));
  EXPECT_TRUE(long_line.lost());
}

}  // namespace
}  // namespace iop::proxy::smtp
