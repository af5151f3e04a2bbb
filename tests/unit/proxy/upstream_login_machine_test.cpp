#include "proxy/upstream_login_machine.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iop::proxy {
namespace {

using namespace upstream_login;

constexpr std::string_view where = "imap.example:993";
constexpr std::string_view token = "tok-123";
// base64("user=alice@example.com\x01auth=Bearer tok-123\x01\x01"), the XOAUTH2 initial response.
constexpr std::string_view ir = "dXNlcj1hbGljZUBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB0b2stMTIzAQE=";
// base64({"status":"401","schemes":"bearer"}): Dovecot's failure challenge.
constexpr std::string_view dovecot_challenge = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=";

// Dovecot 2.3's greeting and post-login capabilities, as it sends them.
constexpr std::string_view dovecot_greeting =
    "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN "
    "AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.\r\n";
constexpr std::string_view dovecot_logged_in =
    "OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT THREAD=REFERENCES "
    "MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC "
    "ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE LITERAL+ NOTIFY "
    "SPECIAL-USE] Logged in\r\n";
constexpr std::string_view dovecot_caps =
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT THREAD=REFERENCES MULTIAPPEND UNSELECT "
    "CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT "
    "SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE LITERAL+ NOTIFY SPECIAL-USE";

UpstreamLoginOptions token_login(bool probe = true) {
  UpstreamLoginOptions o;
  o.user = "alice@example.com";
  o.secret = Secret(token);
  o.probe = probe ? Probe::always : Probe::never;
  o.where = std::string(where);
  return o;
}

UpstreamLoginOptions password_login(std::string password) {
  UpstreamLoginOptions o = token_login();
  o.secret = Secret(std::move(password));
  o.is_password = true;
  return o;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

// Sends as "C(step): bytes" (test secrets revealed on purpose), Done and Failed as <...> lines.
// Done's pending also gets the bytes of the chunks fed after it: they were read after the login
// and belong to the client just the same, so a transcript is the same whatever the cut.
std::string run(const UpstreamLoginOptions& options, const std::vector<std::string_view>& chunks) {
  UpstreamLoginMachine machine(options);
  std::string out;
  std::optional<Done> done;
  std::string after;
  for (const auto chunk : chunks) {
    if (machine.finished()) {
      EXPECT_TRUE(machine.feed(chunk).empty());
      after += chunk;
      continue;
    }
    for (auto& action : machine.feed(chunk)) {
      EXPECT_FALSE(done) << "an action after Done";
      if (const auto* s = std::get_if<Send>(&action)) {
        out += "C(" + std::string(s->step) + "): " + s->bytes.reveal();
      } else if (auto* d = std::get_if<Done>(&action)) {
        done = std::move(*d);
      } else if (const auto* f = std::get_if<Failed>(&action)) {
        out += "<Failed " + std::string(to_string(f->error.kind)) + ": " + f->error.detail + ">\n";
      }
    }
  }
  if (done) {
    out += "<Done " + join(done->capabilities) + " | " + done->pending + after + ">\n";
  }
  return out;
}

// `server` in one piece, split in two at every offset, and byte by byte: the same transcript.
void expect_every_cut(const UpstreamLoginOptions& options, std::string_view server,
                      const std::string& expected) {
  EXPECT_EQ(run(options, {server}), expected);
  for (std::size_t i = 0; i <= server.size(); ++i) {
    ASSERT_EQ(run(options, {server.substr(0, i), server.substr(i)}), expected) << "split at " << i;
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < server.size(); ++i) {
    bytes.push_back(server.substr(i, 1));
  }
  EXPECT_EQ(run(options, bytes), expected) << "byte by byte";
}

std::size_t count(std::string_view haystack, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = haystack.find(needle); at != std::string_view::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// The token goes out once, base64-encoded in the one AUTHENTICATE line, and never in clear.
void expect_token_sent_once(const std::string& transcript) {
  EXPECT_EQ(count(transcript, ir), 1U) << transcript;
  EXPECT_EQ(count(transcript, token), 0U) << transcript;
  const auto failed = transcript.find("<Failed");
  if (failed != std::string::npos) {
    EXPECT_EQ(transcript.find(ir, failed), std::string::npos) << transcript;
  }
}

TEST(UpstreamLoginMachine, DovecotWithSaslIr) {
  const std::string server = std::string(dovecot_greeting) + "p1 " +
                             std::string(dovecot_logged_in) +
                             "* LIST (\\Noselect) \".\" \"\"\r\n"
                             "p2 OK List completed (0.001 + 0.000 secs).\r\n";
  const std::string expected = "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                               "\r\nC(the post-login probe): p2 LIST \"\" \"\"\r\n<Done " +
                               std::string(dovecot_caps) + " | >\n";
  expect_every_cut(token_login(), server, expected);
  expect_token_sent_once(expected);
}

TEST(UpstreamLoginMachine, DovecotFailureChallengeGetsAnEmptyLineThenNo) {
  const std::string server = std::string(dovecot_greeting) + "+ " + std::string(dovecot_challenge) +
                             "\r\n"
                             "p1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";
  const std::string expected =
      "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
      "\r\nC(authentication): \r\n"
      "<Failed auth_rejected: imap.example:993 refused the login: NO [AUTHENTICATIONFAILED] "
      "Authentication failed.>\n";
  expect_every_cut(token_login(), server, expected);
  expect_token_sent_once(expected);
}

TEST(UpstreamLoginMachine, DovecotUnavailableIsNotARejection) {
  // Dovecot when its passdb (the token introspection) cannot be reached.
  const std::string server = std::string(dovecot_greeting) +
                             "p1 NO [UNAVAILABLE] Temporary authentication failure. "
                             "[mail:2024-11-29 10:00:00]\r\n";
  expect_every_cut(token_login(), server,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\n<Failed unavailable: imap.example:993 refused the login: NO "
                       "[UNAVAILABLE] Temporary authentication failure. "
                       "[mail:2024-11-29 10:00:00]>\n");
}

constexpr std::string_view exchange_greeting =
    "* OK The Microsoft Exchange IMAP4 service is ready. "
    "[UABBADMAUAAyADgANABDAEEAMAAwADgANAAuAEcAQgBSAFAAMgA4ADQALgBQAFIATwBEAC4ATwBVAFQATABPAE8ASwAuA"
    "EMATwBNAA==]"
    "\r\n";

TEST(UpstreamLoginMachine, ExchangeOnlineNotConnected) {
  // No capabilities in the greeting; OK AUTHENTICATE without them either; and a token for a
  // mailbox the account cannot open: every command after login gets BAD.
  const std::string server =
      std::string(exchange_greeting) +
      "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN "
      "IDLE NAMESPACE LITERAL+\r\n"
      "p1 OK CAPABILITY completed.\r\n"
      "p2 OK AUTHENTICATE completed.\r\n"
      "p3 BAD User is authenticated but not connected.\r\n"
      "p4 BAD User is authenticated but not connected.\r\n";
  const std::string expected =
      "C(CAPABILITY): p1 CAPABILITY\r\n"
      "C(AUTHENTICATE): p2 AUTHENTICATE XOAUTH2 " +
      std::string(ir) +
      "\r\n"
      "C(CAPABILITY after login): p3 CAPABILITY\r\n"
      "C(the post-login probe): p4 LIST \"\" \"\"\r\n"
      "<Failed not_connected: imap.example:993 accepted the login but not the session: User is "
      "authenticated but not connected.>\n";
  expect_every_cut(token_login(), server, expected);
  expect_token_sent_once(expected);
}

TEST(UpstreamLoginMachine, AutoProbesExchangeOnly) {
  UpstreamLoginOptions o = token_login();
  o.probe = Probe::exchange;
  // Dovecot: Done right after the tagged OK of the login, no LIST.
  const std::string dovecot =
      std::string(dovecot_greeting) + "p1 " + std::string(dovecot_logged_in) + "* 1 RECENT\r\n";
  expect_every_cut(o, dovecot,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) + "\r\n<Done " +
                       std::string(dovecot_caps) + " | * 1 RECENT\r\n>\n");
  // Exchange: the probe runs, and catches "authenticated but not connected".
  const std::string exchange = std::string(exchange_greeting) +
                               "* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR\r\n"
                               "p1 OK CAPABILITY completed.\r\n"
                               "p2 OK [CAPABILITY IMAP4rev1 IDLE] AUTHENTICATE completed.\r\n"
                               "p3 BAD User is authenticated but not connected.\r\n";
  expect_every_cut(o, exchange,
                   "C(CAPABILITY): p1 CAPABILITY\r\nC(AUTHENTICATE): p2 AUTHENTICATE XOAUTH2 " +
                       std::string(ir) +
                       "\r\nC(the post-login probe): p3 LIST \"\" \"\"\r\n"
                       "<Failed not_connected: imap.example:993 accepted the login but not the "
                       "session: User is authenticated but not connected.>\n");
  // The name anywhere in the greeting's text, in any case.
  const std::string renamed =
      "* OK [CAPABILITY IMAP4rev1 SASL-IR] a MICROSOFT exchange server\r\n"
      "p1 OK [CAPABILITY IMAP4rev1 IDLE] done\r\np2 OK listed\r\n";
  expect_every_cut(o, renamed,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\nC(the post-login probe): p2 LIST \"\" \"\"\r\n<Done IMAP4rev1 "
                       "IDLE | >\n");
}

TEST(UpstreamLoginMachine, MicrosoftHostsAlwaysGetTheProbe) {
  EXPECT_EQ(resolve_probe(Probe::exchange, "outlook.office365.com"), Probe::always);
  EXPECT_EQ(resolve_probe(Probe::exchange, "OUTLOOK.Office365.com"), Probe::always);
  EXPECT_EQ(resolve_probe(Probe::exchange, "imap-mail.outlook.com"), Probe::always);
  EXPECT_EQ(resolve_probe(Probe::exchange, "outlook.office.com"), Probe::always);
  EXPECT_EQ(resolve_probe(Probe::exchange, "office365.com"), Probe::always);
  EXPECT_EQ(resolve_probe(Probe::exchange, "outlook.office365.com."), Probe::always);
  EXPECT_EQ(resolve_probe(Probe::exchange, "outlook.office365.us"), Probe::always);
  EXPECT_EQ(resolve_probe(Probe::exchange, "partner.outlook.cn"), Probe::always);
  // Only whole labels: these are someone else's domains.
  EXPECT_EQ(resolve_probe(Probe::exchange, "evil-office365.com"), Probe::exchange);
  EXPECT_EQ(resolve_probe(Probe::exchange, "outlook.office365.com.example"), Probe::exchange);
  EXPECT_EQ(resolve_probe(Probe::exchange, "imap.gmail.com"), Probe::exchange);
  EXPECT_EQ(resolve_probe(Probe::exchange, "127.0.0.1"), Probe::exchange);
  EXPECT_EQ(resolve_probe(Probe::exchange, "."), Probe::exchange);
  EXPECT_EQ(resolve_probe(Probe::exchange, ""), Probe::exchange);
  // An explicit choice stays.
  EXPECT_EQ(resolve_probe(Probe::never, "outlook.office365.com"), Probe::never);
  EXPECT_EQ(resolve_probe(Probe::always, "127.0.0.1"), Probe::always);
}

TEST(UpstreamLoginMachine, WithoutSaslIrTheResponseGoesOnTheContinuation) {
  // An Exchange-style server whose capabilities lack SASL-IR, and which rejects without a
  // failure challenge.
  const std::string caps =
      "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 UIDPLUS MOVE ID UNSELECT CHILDREN "
      "IDLE NAMESPACE LITERAL+\r\n"
      "p1 OK CAPABILITY completed.\r\n";
  const std::string ok = std::string(exchange_greeting) + caps +
                         "+ \r\n"
                         "p2 OK AUTHENTICATE completed.\r\n"
                         "* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS MOVE ID IDLE LITERAL+\r\n"
                         "p3 OK CAPABILITY completed.\r\n"
                         "* LIST (\\Noselect \\HasChildren) \"/\" \"\"\r\n"
                         "p4 OK LIST completed.\r\n";
  const std::string expected =
      "C(CAPABILITY): p1 CAPABILITY\r\n"
      "C(AUTHENTICATE): p2 AUTHENTICATE XOAUTH2\r\n"
      "C(AUTHENTICATE): " +
      std::string(ir) +
      "\r\n"
      "C(CAPABILITY after login): p3 CAPABILITY\r\n"
      "C(the post-login probe): p4 LIST \"\" \"\"\r\n"
      "<Done IMAP4 IMAP4rev1 UIDPLUS MOVE ID IDLE LITERAL+ | >\n";
  expect_every_cut(token_login(), ok, expected);
  expect_token_sent_once(expected);

  const std::string rejected = std::string(exchange_greeting) + caps +
                               "+ \r\n"
                               "p2 NO AUTHENTICATE failed.\r\n";
  expect_every_cut(token_login(), rejected,
                   "C(CAPABILITY): p1 CAPABILITY\r\nC(AUTHENTICATE): p2 AUTHENTICATE XOAUTH2\r\n"
                   "C(AUTHENTICATE): " +
                       std::string(ir) +
                       "\r\n<Failed auth_rejected: imap.example:993 refused the login: NO "
                       "AUTHENTICATE failed.>\n");

  // Refused before the continuation: the response is never sent.
  const std::string refused = std::string(exchange_greeting) + caps +
                              "* OK still there\r\n"
                              "p2 NO [UNAVAILABLE] try later\r\n";
  const std::string out = run(token_login(), {refused});
  EXPECT_EQ(out,
            "C(CAPABILITY): p1 CAPABILITY\r\nC(AUTHENTICATE): p2 AUTHENTICATE XOAUTH2\r\n"
            "<Failed unavailable: imap.example:993 refused the login: NO [UNAVAILABLE] try "
            "later>\n");
  EXPECT_EQ(count(out, ir), 0U);

  // Accepted before the continuation: no session from a server that skips the credentials.
  const std::string skipped = std::string(exchange_greeting) + caps + "p2 OK welcome\r\n";
  expect_every_cut(token_login(), skipped,
                   "C(CAPABILITY): p1 CAPABILITY\r\nC(AUTHENTICATE): p2 AUTHENTICATE XOAUTH2\r\n"
                   "<Failed protocol: imap.example:993 answered OK to AUTHENTICATE before the "
                   "credentials were sent>\n");
}

TEST(UpstreamLoginMachine, GmailStyle) {
  const std::string greeting =
      "* OK Gimap ready for requests from 203.0.113.5 a1b2c3d4mb123456789abc\r\n"
      "* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY "
      "SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER\r\n"
      "p1 OK Thats all she wrote! a1b2c3d4mb123456789abc\r\n";
  const std::string prefix =
      "C(CAPABILITY): p1 CAPABILITY\r\nC(AUTHENTICATE): p2 AUTHENTICATE "
      "XOAUTH2 " +
      std::string(ir) + "\r\n";
  // Success: the post-login capabilities come in an untagged line before the tagged OK.
  const std::string ok = greeting +
                         "* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN "
                         "X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH "
                         "UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE "
                         "APPENDLIMIT=35651584\r\n"
                         "p2 OK alice@example.com authenticated (Success)\r\n"
                         "* LIST (\\Noselect) \"/\" \"\"\r\n"
                         "p3 OK Success\r\n";
  expect_every_cut(
      token_login(), ok,
      prefix +
          "C(the post-login probe): p3 LIST \"\" \"\"\r\n"
          "<Done IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS "
          "COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS "
          "LITERAL- SPECIAL-USE APPENDLIMIT=35651584 | >\n");
  // Failure: Gmail's challenge, then NO.
  const std::string rejected =
      greeting +
      "+ "
      "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8i"
      "fQ==\r\n"
      "p2 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n";
  const std::string expected =
      prefix +
      "C(authentication): \r\n<Failed auth_rejected: imap.example:993 refused the login: NO "
      "[AUTHENTICATIONFAILED] Invalid credentials (Failure)>\n";
  expect_every_cut(token_login(), rejected, expected);
  expect_token_sent_once(expected);
}

TEST(UpstreamLoginMachine, OnlyOneFailureChallenge) {
  const std::string server = std::string(dovecot_greeting) + "+ e30=\r\n+ e30=\r\n";
  expect_every_cut(token_login(), server,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\nC(authentication): \r\n<Failed protocol: unexpected continuation "
                       "during login with imap.example:993>\n");
}

TEST(UpstreamLoginMachine, ByeInTheGreetingOrDuringTheLogin) {
  expect_every_cut(token_login(), "* BYE [UNAVAILABLE] Too many connections\r\n",
                   "<Failed unavailable: imap.example:993 refused the connection: Too many "
                   "connections>\n");
  const std::string during =
      std::string(dovecot_greeting) + "* BYE Connection is closed. 13\r\np1 OK too late\r\n";
  expect_every_cut(token_login(), during,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\n<Failed unavailable: imap.example:993 closed the connection: "
                       "Connection is closed. 13>\n");
  // During the probe too, and its text is sanitized for the log.
  const std::string probe = std::string(dovecot_greeting) + "p1 " + std::string(dovecot_logged_in) +
                            "* BYE going\x1b[2J away\r\n";
  expect_every_cut(token_login(), probe,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\nC(the post-login probe): p2 LIST \"\" \"\"\r\n"
                       "<Failed unavailable: imap.example:993 closed the connection: "
                       "going\\x1b[2J away>\n");
}

TEST(UpstreamLoginMachine, UnexpectedGreetings) {
  expect_every_cut(token_login(), "220 smtp.example ESMTP\r\n",
                   "<Failed protocol: unexpected greeting from imap.example:993: 220 "
                   "SMTP.EXAMPLE>\n");
  expect_every_cut(token_login(), "* PREAUTH [CAPABILITY IMAP4rev1] logged in as root\r\n",
                   "<Failed protocol: unexpected greeting from imap.example:993: * PREAUTH>\n");
  expect_every_cut(token_login(), "\r\n",
                   "<Failed protocol: unexpected greeting from imap.example:993: >\n");
}

TEST(UpstreamLoginMachine, LiteralsInResponsesAreReadWhole) {
  // The literal holds a line that looks like the probe's tagged NO: it is data, not a response.
  const std::string server = std::string(dovecot_greeting) + "p1 " +
                             std::string(dovecot_logged_in) +
                             "* LIST () \"/\" {14}\r\np2 NO forged\r\n\r\n"
                             "* LIST () \"/\" {0}\r\n\r\n"
                             "* LIST () \"/\" {5+}\r\nINBOX\r\n"
                             "p2 OK List completed.\r\n";
  expect_every_cut(token_login(), server,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\nC(the post-login probe): p2 LIST \"\" \"\"\r\n<Done " +
                       std::string(dovecot_caps) + " | >\n");
  // A literal in the greeting's continuation lines before the capabilities.
  const std::string early =
      "* OK hello\r\n* ID (\"name\" {7}\r\nDovecot)\r\n"
      "* CAPABILITY IMAP4rev1 SASL-IR\r\np1 OK done\r\n"
      "p2 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n";
  expect_every_cut(token_login(false), early,
                   "C(CAPABILITY): p1 CAPABILITY\r\nC(AUTHENTICATE): p2 AUTHENTICATE XOAUTH2 " +
                       std::string(ir) + "\r\n<Done IMAP4rev1 IDLE | >\n");
}

TEST(UpstreamLoginMachine, ServerBytesAfterTheLoginArePending) {
  const std::string server = std::string(dovecot_greeting) + "p1 " +
                             std::string(dovecot_logged_in) +
                             "p2 OK List completed.\r\n"
                             "* 3 EXISTS\r\n* BYE {5}\r\n";
  expect_every_cut(token_login(), server,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\nC(the post-login probe): p2 LIST \"\" \"\"\r\n<Done " +
                       std::string(dovecot_caps) + " | * 3 EXISTS\r\n* BYE {5}\r\n>\n");
  // Without the probe, right after the tagged OK of the login; in one read, all of it.
  const std::string no_probe =
      std::string(dovecot_greeting) + "p1 " + std::string(dovecot_logged_in) + "* 1 RECENT\r\n";
  const std::string expected = "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                               "\r\n<Done " + std::string(dovecot_caps) + " | * 1 RECENT\r\n>\n";
  expect_every_cut(token_login(false), no_probe, expected);
  UpstreamLoginMachine machine(token_login(false));
  auto actions = machine.feed(no_probe);
  ASSERT_EQ(actions.size(), 2U);
  EXPECT_EQ(std::get<Done>(actions[1]).pending, "* 1 RECENT\r\n");
  EXPECT_TRUE(machine.finished());
  EXPECT_TRUE(machine.feed("* 2 RECENT\r\n").empty());
}

TEST(UpstreamLoginMachine, TaggedResponsesOfOtherCommandsAreIgnored) {
  const std::string server = std::string(dovecot_greeting) +
                             "p9 NO not yours\r\n"
                             "* OK [ALERT] maintenance tonight\r\n"
                             "p1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"
                             "p1 NO stale\r\n"
                             "p2 OK done\r\n";
  expect_every_cut(token_login(), server,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\nC(the post-login probe): p2 LIST \"\" \"\"\r\n<Done IMAP4rev1 | >\n");
}

TEST(UpstreamLoginMachine, PasswordLogin) {
  const std::string server = std::string(dovecot_greeting) + "p1 " +
                             std::string(dovecot_logged_in) + "p2 OK List completed.\r\n";
  // Quoted strings with \ and " escaped (RFC 9051 §4.3).
  expect_every_cut(password_login("pa\"ss\\word"), server,
                   "C(LOGIN): p1 LOGIN \"alice@example.com\" \"pa\\\"ss\\\\word\"\r\n"
                   "C(the post-login probe): p2 LIST \"\" \"\"\r\n<Done " +
                       std::string(dovecot_caps) + " | >\n");
  const std::string wrong =
      std::string(dovecot_greeting) + "p1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";
  expect_every_cut(password_login("wrong-one"), wrong,
                   "C(LOGIN): p1 LOGIN \"alice@example.com\" \"wrong-one\"\r\n"
                   "<Failed auth_rejected: imap.example:993 refused the login: NO "
                   "[AUTHENTICATIONFAILED] Authentication failed.>\n");
  // LOGIN has no continuation: a "+" is not a failure challenge to answer.
  expect_every_cut(password_login("secret-pw"), std::string(dovecot_greeting) + "+ \r\n",
                   "C(LOGIN): p1 LOGIN \"alice@example.com\" \"secret-pw\"\r\n"
                   "<Failed protocol: unexpected continuation during login with "
                   "imap.example:993>\n");
}

TEST(UpstreamLoginMachine, LoginDisabledKeepsThePassword) {
  const std::string out = run(password_login("secret-pw"),
                              {"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n"});
  EXPECT_EQ(out,
            "<Failed auth_rejected: imap.example:993 does not accept LOGIN (LOGINDISABLED)>\n");
  // Found by CAPABILITY too.
  expect_every_cut(password_login("secret-pw"),
                   "* OK ready\r\n* CAPABILITY IMAP4rev1 logindisabled\r\np1 OK done\r\n",
                   "C(CAPABILITY): p1 CAPABILITY\r\n<Failed auth_rejected: imap.example:993 does "
                   "not accept LOGIN (LOGINDISABLED)>\n");
}

TEST(UpstreamLoginMachine, CredentialsTheCommandCannotCarry) {
  for (const std::string password :
       std::vector<std::string>{"pass\r\nword", std::string("nul\0byte", 8), "caf\xc3\xa9"}) {
    expect_every_cut(password_login(password), dovecot_greeting,
                     "<Failed protocol: the stored username or password holds characters LOGIN "
                     "cannot carry>\n");
  }
  auto bad_user = password_login("fine");
  bad_user.user = "alice\r\n@example.com";
  EXPECT_EQ(run(bad_user, {dovecot_greeting}),
            "<Failed protocol: the stored username or password holds characters LOGIN cannot "
            "carry>\n");
  // XOAUTH2 separates its fields with \x01: a token holding one is refused, not sent.
  auto bad_token = token_login();
  bad_token.secret =
      Secret(std::string_view("tok\x01"
                              "auth=Bearer other"));
  EXPECT_EQ(run(bad_token, {dovecot_greeting}),
            "<Failed protocol: the account name or its token holds characters SASL cannot "
            "carry>\n");
}

TEST(UpstreamLoginMachine, UnreadableResponseLine) {
  const std::string server = std::string(dovecot_greeting) + "\r\n";
  expect_every_cut(token_login(), server,
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\n<Failed protocol: authentication with imap.example:993: not an IMAP "
                       "response: \"\">\n");
  expect_every_cut(token_login(), "* OK hi\r\n+ go on\r\n",
                   "C(CAPABILITY): p1 CAPABILITY\r\n<Failed protocol: CAPABILITY with "
                   "imap.example:993: unexpected continuation>\n");
}

TEST(UpstreamLoginMachine, StepsNameWhatTheReadIsFor) {
  UpstreamLoginMachine machine(token_login());
  EXPECT_EQ(machine.step(), "reading the greeting");
  auto actions = machine.feed("* OK hi\r\n");
  ASSERT_EQ(actions.size(), 1U);
  EXPECT_EQ(std::get<Send>(actions[0]).step, "CAPABILITY");
  EXPECT_EQ(machine.step(), "CAPABILITY");
  actions = machine.feed("p1 OK no capabilities\r\n");
  ASSERT_EQ(actions.size(), 1U);
  EXPECT_EQ(std::get<Send>(actions[0]).step, "AUTHENTICATE");
  EXPECT_EQ(machine.step(), "AUTHENTICATE");
  machine.feed("+ \r\n");
  EXPECT_EQ(machine.step(), "authentication");
  machine.feed("p2 OK in\r\n");
  EXPECT_EQ(machine.step(), "CAPABILITY after login");
  machine.feed("p3 OK none\r\n");  // no capabilities after a CAPABILITY: asked once, then probe
  EXPECT_EQ(machine.step(), "the post-login probe");
  actions = machine.feed("p4 OK\r\n");
  ASSERT_EQ(actions.size(), 1U);
  EXPECT_EQ(std::get<Done>(actions[0]).capabilities, std::vector<std::string>{});
}

UpstreamLoginOptions small_limits(std::size_t line, std::size_t total) {
  auto o = token_login();
  o.limits.max_line_bytes = line;
  o.limits.max_total_bytes = total;
  return o;
}

TEST(UpstreamLoginMachine, ALineOrLiteralOverTheLimit) {
  const std::string greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR] hi\r\n";  // 38 bytes of line
  const std::string auth = "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) + "\r\n";
  // Exactly the limit passes, whatever the cut (even with the CR and LF in different reads).
  expect_every_cut(small_limits(38, 4096),
                   greeting + "p1 OK [CAPABILITY A] " + std::string(38 - 21, 'x') + "\r\np2 OK\r\n",
                   auth + "C(the post-login probe): p2 LIST \"\" \"\"\r\n<Done A | >\n");
  // One byte more fails, with or without its CRLF arriving.
  const std::string too_long =
      "authentication with imap.example:993: the server sent a response "
      "line or literal over 38 bytes; refused as broken or hostile "
      "(check the upstream host and port)";
  expect_every_cut(small_limits(38, 4096), greeting + "* " + std::string(37, 'x') + "\r\n",
                   auth + "<Failed protocol: " + too_long + ">\n");
  expect_every_cut(small_limits(38, 4096), greeting + "* " + std::string(37, 'x'),
                   auth + "<Failed protocol: " + too_long + ">\n");
  // A bare LF does not end a line.
  expect_every_cut(small_limits(38, 4096),
                   greeting + "* " + std::string(20, 'x') + "\n" + std::string(20, 'y') + "\r\n",
                   auth + "<Failed protocol: " + too_long + ">\n");
  // A literal is announced over the limit: refused before its bytes come.
  expect_every_cut(small_limits(38, 4096), greeting + "* 1 FETCH (BODY[] {39}\r\n",
                   auth + "<Failed protocol: " + too_long + ">\n");
  expect_every_cut(small_limits(38, 4096),
                   greeting + "* 1 FETCH (BODY[] {38}\r\n" + std::string(38, 'z') +
                       ")\r\np1 OK [CAPABILITY B] in\r\np2 OK\r\n",
                   auth + "C(the post-login probe): p2 LIST \"\" \"\"\r\n<Done B | >\n");
  // The real limit is 1 MiB.
  expect_every_cut(token_login(), std::string(dovecot_greeting) + "* 1 FETCH (BODY[] {1048577}\r\n",
                   "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) +
                       "\r\n<Failed protocol: authentication with imap.example:993: the server "
                       "sent a response line or literal over 1 MiB; refused as broken or hostile "
                       "(check the upstream host and port)>\n");
}

TEST(UpstreamLoginMachine, EverythingBeforeTheSessionIsCapped) {
  const std::string greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR] hi\r\n";
  const std::string result = "p1 OK [CAPABILITY A] in\r\n";
  const std::string auth = "C(AUTHENTICATE): p1 AUTHENTICATE XOAUTH2 " + std::string(ir) + "\r\n";
  const std::string over =
      "<Failed protocol: authentication with imap.example:993: the server "
      "sent more than 100 bytes before the session started; refused as "
      "broken or hostile (check the upstream host and port)>\n";
  auto o = small_limits(1000, 100);
  o.probe = Probe::never;
  // An untagged line that brings the exchange to `size` bytes with the tagged OK.
  auto exchange_of = [&](std::size_t size) {
    const std::size_t filler = size - greeting.size() - result.size() - 4;
    return greeting + "* " + std::string(filler, 'y') + "\r\n" + result;
  };
  ASSERT_EQ(exchange_of(100).size(), 100U);
  // Exactly 100 bytes: accepted, and what follows the last response does not count.
  expect_every_cut(o, exchange_of(100) + std::string(200, 'p'),
                   auth + "<Done A | " + std::string(200, 'p') + ">\n");
  // 101: refused at the 101st byte, whether the rest comes or not.
  expect_every_cut(o, exchange_of(101), auth + over);
  expect_every_cut(o, exchange_of(101).substr(0, 101), auth + over);
  // Literal after literal, each under the line limit (the hostile server of the integration
  // test), stops at the total.
  std::string literals = greeting;
  for (int i = 0; i < 5; ++i) {
    literals += "* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n";
  }
  expect_every_cut(o, literals, auth + over);
}

}  // namespace
}  // namespace iop::proxy
