#include "proxy/preauth_machine.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace iop::proxy {
namespace {

using namespace std::string_literals;

constexpr std::string_view tls_caps = "IMAP4rev1 LITERAL+ SASL-IR ID AUTH=PLAIN";
constexpr std::string_view plain_caps = "IMAP4rev1 LITERAL+ SASL-IR ID STARTTLS LOGINDISABLED";
// base64("\0alice\0secret")
constexpr std::string_view alice_plain = "AGFsaWNlAHNlY3JldA==";

std::string_view reason_name(CloseReason reason) {
  switch (reason) {
    case CloseReason::logout:
      return "logout";
    case CloseReason::protocol_error:
      return "protocol_error";
    case CloseReason::too_many_commands:
      return "too_many_commands";
    case CloseReason::too_many_login_failures:
      return "too_many_login_failures";
  }
  return "?";
}

// Sends verbatim (prefixed "S: " when `mark_sends`, which shows how they were merged), other
// actions as <...> lines. Test passwords are revealed on purpose.
std::string render(const std::vector<Action>& actions, bool mark_sends = true) {
  std::string out;
  for (const auto& action : actions) {
    if (const auto* s = std::get_if<Send>(&action)) {
      out += (mark_sends ? "S: " : "") + s->bytes;
    } else if (std::holds_alternative<StartTls>(action)) {
      out += "<StartTls>\n";
    } else if (const auto* c = std::get_if<CheckCredentials>(&action)) {
      out += "<Check " + c->tag + " " + c->username + " " + c->password.reveal() + " " +
             (c->method == LoginMethod::login ? "login" : "plain") + ">\n";
    } else if (const auto* a = std::get_if<Authenticated>(&action)) {
      out += "<Authenticated " + a->pending + ">\n";
    } else if (const auto* cl = std::get_if<Close>(&action)) {
      out += "<Close " + std::string(reason_name(cl->reason)) + ">\n";
    }
  }
  return out;
}

PreauthOptions tls_port() { return PreauthOptions{}; }

PreauthOptions plain_port() {
  PreauthOptions options;
  options.tls_active = false;
  return options;
}

// Drives a whole conversation: answers each CheckCredentials with the next outcome and each
// StartTls with on_tls_started().
struct Conversation {
  PreauthOptions options;
  std::vector<LoginOutcome> outcomes;

  std::string run(const std::vector<std::string_view>& chunks) const {
    PreauthMachine machine(options);
    std::size_t next_outcome = 0;
    std::string out = render(machine.start(), false);
    for (const auto chunk : chunks) {
      std::vector<Action> actions = machine.feed(chunk);
      while (!actions.empty()) {
        out += render(actions, false);
        const Action last = actions.back();
        actions.clear();
        if (std::holds_alternative<CheckCredentials>(last)) {
          actions = machine.on_login_result(next_outcome < outcomes.size()
                                                ? outcomes[next_outcome++]
                                                : LoginOutcome::failed(LoginFailure::auth_failed));
        } else if (std::holds_alternative<StartTls>(last)) {
          actions = machine.on_tls_started();
        }
      }
    }
    return out;
  }
};

TEST(PreauthGreeting, TlsPortOffersPlain) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.start()),
            "S: * OK [CAPABILITY " + std::string(tls_caps) + "] imap-oauth2-proxy ready\r\n");
}

TEST(PreauthGreeting, PlainPortDisablesLogin) {
  PreauthMachine m(plain_port());
  EXPECT_EQ(render(m.start()),
            "S: * OK [CAPABILITY " + std::string(plain_caps) + "] imap-oauth2-proxy ready\r\n");
}

TEST(PreauthGreeting, PlainPortWithLoopbackException) {
  auto options = plain_port();
  options.allow_plaintext_login = true;
  PreauthMachine m(options);
  EXPECT_EQ(render(m.start()),
            "S: * OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID STARTTLS "
            "AUTH=PLAIN] imap-oauth2-proxy ready\r\n");
  options.starttls_available = false;
  PreauthMachine no_tls(options);
  EXPECT_EQ(render(no_tls.start()),
            "S: * OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID AUTH=PLAIN] imap-oauth2-proxy "
            "ready\r\n");
}

TEST(PreauthMachine, CapabilityNoopIdLogout) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 CAPABILITY\r\n")),
            "S: * CAPABILITY " + std::string(tls_caps) + "\r\na1 OK CAPABILITY completed\r\n");
  EXPECT_EQ(render(m.feed("a2 noop\r\n")), "S: a2 OK NOOP completed\r\n");
  EXPECT_EQ(render(m.feed("a3 ID NIL\r\n")),
            "S: * ID (\"name\" \"imap-oauth2-proxy\")\r\na3 OK ID completed\r\n");
  EXPECT_EQ(render(m.feed("a4 ID (\"name\" \"Thunderbird\" \"version\" {3+}\r\n115)\r\n")),
            "S: * ID (\"name\" \"imap-oauth2-proxy\")\r\na4 OK ID completed\r\n");
  EXPECT_EQ(render(m.feed("a5 LOGOUT\r\n")),
            "S: * BYE imap-oauth2-proxy logging out\r\na5 OK LOGOUT completed\r\n<Close logout>\n");
  EXPECT_EQ(m.state(), PreauthMachine::State::closed);
  EXPECT_TRUE(m.feed("a6 NOOP\r\n").empty());
}

TEST(PreauthMachine, BatchOfResponsesIsOneSend) {
  PreauthMachine m(tls_port());
  const auto actions = m.feed("a1 NOOP\r\na2 NOOP\r\na3 FOO\r\n");
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(render(actions),
            "S: a1 OK NOOP completed\r\na2 OK NOOP completed\r\na3 BAD Unknown command\r\n");
}

TEST(PreauthMachine, InvalidIdArguments) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 ID (\"name\")\r\na2 ID ((\"a\" \"b\"))\r\na3 ID\r\na4 ID x\r\n")),
            "S: a1 BAD ID expects NIL or a list of field-value pairs\r\n"
            "a2 BAD ID expects NIL or a list of field-value pairs\r\n"
            "a3 BAD ID expects NIL or a list of field-value pairs\r\n"
            "a4 BAD ID expects NIL or a list of field-value pairs\r\n");
}

TEST(PreauthMachine, LoginWithSynchronizingLiterals) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 LOGIN {5}\r\n")), "S: + Ready for literal data\r\n");
  EXPECT_EQ(render(m.feed("alice {6}\r\n")), "S: + Ready for literal data\r\n");
  EXPECT_EQ(render(m.feed("secret\r\n")), "<Check a1 alice secret login>\n");
  EXPECT_EQ(m.state(), PreauthMachine::State::awaiting_credentials);
  EXPECT_EQ(m.username(), "alice");
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::success({"IMAP4rev1", "IDLE", "MOVE"}))),
            "S: a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] LOGIN completed\r\n<Authenticated >\n");
  EXPECT_EQ(m.state(), PreauthMachine::State::authenticated);
  EXPECT_TRUE(m.feed("a2 SELECT INBOX\r\n").empty());
}

TEST(PreauthMachine, LoginWithNonSynchronizingLiteralsAndQuoted) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 LOGIN {17+}\r\nalice@example.com \"p\\\"w\"\r\n")),
            "<Check a1 alice@example.com p\"w login>\n");
}

TEST(PreauthMachine, PipelinedBytesAfterLoginGoToTheRelay) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 LOGIN alice secret\r\na2 SELECT INBOX\r\na3 FE")),
            "<Check a1 alice secret login>\n");
  EXPECT_TRUE(m.feed("TCH 1 BODY[]\r\n").empty());
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::success({}))),
            "S: a1 OK LOGIN completed\r\n"
            "<Authenticated a2 SELECT INBOX\r\na3 FETCH 1 BODY[]\r\n>\n");
}

TEST(PreauthMachine, CommandsWaitWhileCredentialsAreChecked) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 LOGIN alice wrong\r\n")), "<Check a1 alice wrong login>\n");
  EXPECT_TRUE(m.feed("a2 NOOP\r\n").empty());
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::failed(LoginFailure::auth_failed))),
            "S: a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\na2 OK NOOP completed\r\n");
  EXPECT_TRUE(m.on_login_result(LoginOutcome::success({})).empty());  // nothing pending
}

TEST(PreauthMachine, AuthenticatePlainWithInitialResponse) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 AUTHENTICATE PLAIN "s + std::string(alice_plain) + "\r\n")),
            "<Check a1 alice secret plain>\n");
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::success({"IMAP4rev1"}))),
            "S: a1 OK [CAPABILITY IMAP4rev1] AUTHENTICATE completed\r\n<Authenticated >\n");
}

TEST(PreauthMachine, AuthenticatePlainWithContinuation) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 authenticate plain\r\n")), "S: + \r\n");
  EXPECT_EQ(m.state(), PreauthMachine::State::awaiting_response_line);
  EXPECT_EQ(render(m.feed(std::string(alice_plain) + "\r\n")), "<Check a1 alice secret plain>\n");
}

TEST(PreauthMachine, AuthenticateCancelled) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 AUTHENTICATE PLAIN\r\n")), "S: + \r\n");
  EXPECT_EQ(render(m.feed("*\r\na2 NOOP\r\n")),
            "S: a1 BAD AUTHENTICATE cancelled\r\na2 OK NOOP completed\r\n");
}

TEST(PreauthMachine, AuthenticateBadResponses) {
  PreauthMachine m(tls_port());
  // RFC 4959: "=" is an empty response, which is not a PLAIN message.
  EXPECT_EQ(render(m.feed("a1 AUTHENTICATE PLAIN =\r\n")),
            "S: a1 BAD Malformed SASL PLAIN message\r\n");
  EXPECT_EQ(render(m.feed("a2 AUTHENTICATE PLAIN AGFsaWNl\r\n")),  // "\0alice"
            "S: a2 BAD Malformed SASL PLAIN message\r\n");
  EXPECT_EQ(render(m.feed("a3 AUTHENTICATE PLAIN\r\nnot base64!\r\n")),
            "S: + \r\na3 BAD Invalid base64 in SASL response\r\n");
  // base64("bob\0alice\0secret"): alice's password used to act as bob.
  EXPECT_EQ(render(m.feed("a4 AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n")),
            "S: a4 NO [AUTHORIZATIONFAILED] Authorization identity must be empty or the user "
            "name\r\n");
  EXPECT_EQ(render(m.feed("a5 AUTHENTICATE\r\na6 AUTHENTICATE PLAIN a b\r\n")),
            "S: a5 BAD AUTHENTICATE expects a mechanism and an optional initial response\r\n"
            "a6 BAD AUTHENTICATE expects a mechanism and an optional initial response\r\n");
}

TEST(PreauthMachine, OnlyPlainIsOffered) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 AUTHENTICATE XOAUTH2 dXNlcj0=\r\na2 AUTHENTICATE LOGIN\r\n")),
            "S: a1 NO Unsupported authentication mechanism\r\n"
            "a2 NO Unsupported authentication mechanism\r\n");
  for (const auto& cap : m.capabilities()) {
    EXPECT_NE(cap, "AUTH=XOAUTH2");
  }
}

TEST(PreauthMachine, LoginDisabledOnPlainPort) {
  PreauthMachine m(plain_port());
  EXPECT_EQ(render(m.feed("a1 LOGIN alice secret\r\n")),
            "S: a1 NO [PRIVACYREQUIRED] Plaintext login is disabled: use STARTTLS first\r\n");
  EXPECT_EQ(render(m.feed("a2 AUTHENTICATE PLAIN "s + std::string(alice_plain) + "\r\n")),
            "S: a2 NO [PRIVACYREQUIRED] Plaintext authentication is disabled: use STARTTLS "
            "first\r\n");
  // A literal password is refused before the client sends it: no "+".
  EXPECT_EQ(render(m.feed("a3 LOGIN {5}\r\n")),
            "S: a3 NO [PRIVACYREQUIRED] Plaintext login is disabled: use STARTTLS first\r\n");
  EXPECT_EQ(render(m.feed("a4 CAPABILITY\r\n")),
            "S: * CAPABILITY " + std::string(plain_caps) + "\r\na4 OK CAPABILITY completed\r\n");
}

TEST(PreauthMachine, LoopbackExceptionAllowsPlaintextLogin) {
  auto options = plain_port();
  options.allow_plaintext_login = true;
  PreauthMachine m(options);
  EXPECT_EQ(render(m.feed("a1 LOGIN alice secret\r\n")), "<Check a1 alice secret login>\n");
}

TEST(PreauthMachine, StartTlsDiscardsPlaintextSentBeforeTheHandshake) {
  PreauthMachine m(plain_port());
  // CVE-2011-0411: a man in the middle appends a command after STARTTLS in the same packet.
  EXPECT_EQ(render(m.feed("a1 STARTTLS\r\na2 LOGIN mallory evil\r\na3 LO")),
            "S: a1 OK Begin TLS negotiation now\r\n<StartTls>\n");
  EXPECT_EQ(m.state(), PreauthMachine::State::awaiting_tls);
  EXPECT_TRUE(m.feed("GIN x y\r\n").empty());
  EXPECT_TRUE(m.on_tls_started().empty());
  EXPECT_TRUE(m.tls_active());
  EXPECT_EQ(render(m.feed("b1 CAPABILITY\r\n")),
            "S: * CAPABILITY " + std::string(tls_caps) + "\r\nb1 OK CAPABILITY completed\r\n");
  EXPECT_EQ(render(m.feed("b2 STARTTLS\r\n")), "S: b2 BAD TLS is already active\r\n");
  EXPECT_EQ(render(m.feed("b3 LOGIN alice secret\r\n")), "<Check b3 alice secret login>\n");
}

TEST(PreauthMachine, StartTlsRefusedWhereItDoesNotApply) {
  PreauthMachine tls(tls_port());
  EXPECT_EQ(render(tls.feed("a1 STARTTLS\r\n")), "S: a1 BAD TLS is already active\r\n");
  auto options = plain_port();
  options.starttls_available = false;
  PreauthMachine plain(options);
  EXPECT_EQ(render(plain.feed("a1 STARTTLS\r\na2 STARTTLS x\r\n")),
            "S: a1 BAD STARTTLS is not available\r\na2 BAD STARTTLS takes no arguments\r\n");
  EXPECT_TRUE(plain.on_tls_started().empty());
  EXPECT_FALSE(plain.tls_active());
}

TEST(PreauthMachine, OtherCommandsRefused) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(
      render(m.feed("a1 SELECT INBOX\r\na2 uid fetch 1 (FLAGS)\r\na3 XYZZY\r\na4 NOOP x\r\n")),
      "S: a1 BAD Command not allowed before login\r\n"
      "a2 BAD Command not allowed before login\r\n"
      "a3 BAD Unknown command\r\n"
      "a4 BAD NOOP takes no arguments\r\n");
  // A literal for a command that is refused anyway is not read: no "+".
  EXPECT_EQ(render(m.feed("a5 APPEND INBOX {100}\r\na6 NOOP\r\n")),
            "S: a5 BAD Command not allowed before login\r\na6 OK NOOP completed\r\n");
}

TEST(PreauthMachine, LoginArgumentErrors) {
  PreauthMachine m(tls_port());
  EXPECT_EQ(render(m.feed("a1 LOGIN alice\r\na2 LOGIN a b c\r\na3 LOGIN (a) b\r\n")),
            "S: a1 BAD LOGIN expects a user name and a password\r\n"
            "a2 BAD LOGIN expects a user name and a password\r\n"
            "a3 BAD LOGIN expects a user name and a password\r\n");
}

TEST(PreauthMachine, LoginFailureKinds) {
  auto options = tls_port();
  options.max_failed_logins = 10;
  PreauthMachine m(options);
  m.feed("a1 LOGIN alice x\r\n");
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::failed(
                LoginFailure::needs_reauth,
                "account needs re-authorization: run 'imap-oauth2-proxy account add "
                "alice@example.com'"))),
            "S: a1 NO [AUTHENTICATIONFAILED] account needs re-authorization: run "
            "'imap-oauth2-proxy account add alice@example.com'\r\n");
  m.feed("a2 LOGIN alice x\r\n");
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::failed(LoginFailure::upstream_unavailable))),
            "S: a2 NO [UNAVAILABLE] Upstream server unavailable, try again later\r\n");
  m.feed("a3 LOGIN alice x\r\n");
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::failed(LoginFailure::other, "odd\r\n"))),
            "S: a3 NO [CONTACTADMIN] odd  \r\n");
  m.feed("a4 LOGIN alice x\r\n");
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::failed(
                LoginFailure::auth_failed, "User is authenticated but not connected."))),
            "S: a4 NO [AUTHENTICATIONFAILED] User is authenticated but not connected.\r\n");
}

TEST(PreauthMachine, TooManyFailedLogins) {
  PreauthMachine m(tls_port());  // 3 allowed
  for (int i = 1; i <= 2; ++i) {
    const auto tag = "a" + std::to_string(i);
    EXPECT_EQ(render(m.feed(tag + " LOGIN alice wrong\r\n")),
              "<Check " + tag + " alice wrong login>\n");
    EXPECT_EQ(render(m.on_login_result(LoginOutcome::failed(LoginFailure::auth_failed))),
              "S: " + tag + " NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
  }
  m.feed("a3 LOGIN alice wrong\r\n");
  EXPECT_EQ(render(m.on_login_result(LoginOutcome::failed(LoginFailure::auth_failed))),
            "S: a3 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
            "* BYE Too many authentication failures\r\n<Close too_many_login_failures>\n");
  EXPECT_EQ(m.state(), PreauthMachine::State::closed);
}

TEST(PreauthMachine, UnavailableDoesNotCountAsFailure) {
  PreauthMachine m(tls_port());
  for (int i = 0; i < 5; ++i) {
    m.feed("a LOGIN alice secret\r\n");
    m.on_login_result(LoginOutcome::failed(LoginFailure::upstream_unavailable));
  }
  EXPECT_EQ(m.state(), PreauthMachine::State::reading);
}

TEST(PreauthMachine, TooManyCommandsBeforeLogin) {
  auto options = tls_port();
  options.max_commands = 3;
  PreauthMachine m(options);
  EXPECT_EQ(render(m.feed("a1 NOOP\r\na2 NOOP\r\na3 NOOP\r\na4 NOOP\r\na5 NOOP\r\n")),
            "S: a1 OK NOOP completed\r\na2 OK NOOP completed\r\na3 OK NOOP completed\r\n"
            "* BYE Too many commands before login\r\n<Close too_many_commands>\n");
}

TEST(PreauthMachine, InvalidLinesCountAsCommands) {
  auto options = tls_port();
  options.max_commands = 2;
  PreauthMachine m(options);
  EXPECT_EQ(render(m.feed("\r\na1 NOOP\r\na2 NOOP\r\n")),
            "S: * BAD Empty command line\r\na1 OK NOOP completed\r\n"
            "* BYE Too many commands before login\r\n<Close too_many_commands>\n");
}

TEST(PreauthMachine, TooManyErrors) {
  auto options = tls_port();
  options.max_errors = 2;
  PreauthMachine m(options);
  EXPECT_EQ(render(m.feed("a1 FOO\r\na2 LOGIN \"x\\y\" z\r\na3 NOOP\r\n")),
            "S: a1 BAD Unknown command\r\na2 BAD Invalid escape in quoted string\r\n"
            "* BYE Too many invalid commands\r\n<Close protocol_error>\n");
}

TEST(PreauthMachine, Literal2Pow40) {
  PreauthMachine sync(tls_port());
  EXPECT_EQ(render(sync.feed("a1 LOGIN {1099511627776}\r\n")),
            "S: a1 BAD [TOOBIG] Literal too large\r\n");
  EXPECT_EQ(sync.state(), PreauthMachine::State::reading);
  EXPECT_EQ(render(sync.feed("a2 NOOP\r\n")), "S: a2 OK NOOP completed\r\n");

  PreauthMachine nonsync(tls_port());
  EXPECT_EQ(render(nonsync.feed("a1 LOGIN {1099511627776+}\r\n" + std::string(1000, 'x'))),
            "S: a1 BAD [TOOBIG] Literal too large\r\n* BYE Literal too large\r\n"
            "<Close protocol_error>\n");
}

TEST(PreauthMachine, MegabyteWithoutNewlineRefusedEarly) {
  const std::string expected =
      "S: a1 BAD Command line too long\r\n* BYE Command line too long\r\n<Close protocol_error>\n";
  PreauthMachine whole(tls_port());
  EXPECT_EQ(render(whole.feed("a1 LOGIN " + std::string(1 << 20, 'a'))), expected);
  EXPECT_EQ(whole.state(), PreauthMachine::State::closed);

  // Read by read: refused by the read that crosses 8 KiB, the rest is ignored.
  PreauthMachine chunked(tls_port());
  EXPECT_TRUE(chunked.feed("a1 LOGIN ").empty());
  const std::string chunk(4096, 'a');
  EXPECT_TRUE(chunked.feed(chunk).empty());
  EXPECT_EQ(render(chunked.feed(chunk)), expected);
  EXPECT_TRUE(chunked.feed(chunk).empty());
}

TEST(PreauthMachine, FatalErrorWithoutTagIsUntagged) {
  auto options = tls_port();
  options.limits.max_line_bytes = 16;
  PreauthMachine m(options);
  EXPECT_EQ(render(m.feed(std::string(20, 'x'))),
            "S: * BAD Command line too long\r\n* BYE Command line too long\r\n"
            "<Close protocol_error>\n");
}

TEST(PreauthMachine, GarbageIsAnsweredAndClosed) {
  PreauthMachine m(plain_port());
  std::uint32_t state = 12345;
  std::string garbage;
  for (int i = 0; i < 100000; ++i) {
    state = state * 1103515245u + 12345u;
    garbage += static_cast<char>(state >> 24);
  }
  const auto actions = m.feed(garbage);
  ASSERT_FALSE(actions.empty());
  EXPECT_TRUE(std::holds_alternative<Close>(actions.back()));
  EXPECT_EQ(m.state(), PreauthMachine::State::closed);
  for (const auto& action : actions) {
    if (const auto* s = std::get_if<Send>(&action)) {
      // Every line ends in CRLF and there is no other CR or LF.
      for (std::size_t i = 0; i < s->bytes.size(); ++i) {
        if (s->bytes[i] == '\r') {
          ASSERT_LT(i + 1, s->bytes.size());
          EXPECT_EQ(s->bytes[i + 1], '\n');
        } else if (s->bytes[i] == '\n') {
          ASSERT_GT(i, 0u);
          EXPECT_EQ(s->bytes[i - 1], '\r');
        }
      }
    }
  }
}

// One conversation with literals, a failed LOGIN, AUTHENTICATE by continuation and pipelined
// bytes after it: the same actions whatever the read boundaries.
TEST(PreauthMachine, ConversationSameAtEverySplit) {
  const std::string input =
      "a0 CAPABILITY\r\n"
      "a1 LOGIN {5}\r\nalice {6}\r\nwrong!\r\n"
      "a2 AUTHENTICATE PLAIN\r\n" +
      std::string(alice_plain) +
      "\r\n"
      "a3 SELECT INBOX\r\n";
  const Conversation conversation{
      tls_port(),
      {LoginOutcome::failed(LoginFailure::auth_failed), LoginOutcome::success({"IMAP4rev1"})}};
  const std::string expected = "* OK [CAPABILITY " + std::string(tls_caps) +
                               "] imap-oauth2-proxy ready\r\n"
                               "* CAPABILITY " +
                               std::string(tls_caps) +
                               "\r\na0 OK CAPABILITY completed\r\n"
                               "+ Ready for literal data\r\n+ Ready for literal data\r\n"
                               "<Check a1 alice wrong! login>\n"
                               "a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
                               "+ \r\n<Check a2 alice secret plain>\n"
                               "a2 OK [CAPABILITY IMAP4rev1] AUTHENTICATE completed\r\n";
  const std::string_view in = input;
  // Where the pipelined bytes end up depends on the split only in how much arrived before the
  // login finished; everything after is dropped by this driver (the session would relay it).
  auto strip_pending = [](std::string s) {
    const auto at = s.find("<Authenticated");
    return at == std::string::npos ? s : s.substr(0, at);
  };
  EXPECT_EQ(strip_pending(conversation.run({in})), expected);
  for (std::size_t i = 0; i <= in.size(); ++i) {
    EXPECT_EQ(strip_pending(conversation.run({in.substr(0, i), in.substr(i)})), expected)
        << "split at " << i;
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < in.size(); ++i) {
    bytes.push_back(in.substr(i, 1));
  }
  EXPECT_EQ(strip_pending(conversation.run(bytes)), expected);
  EXPECT_NE(conversation.run({in}).find("<Authenticated a3 SELECT INBOX\r\n>"), std::string::npos);
}

TEST(PreauthMachine, SecretsNeverSentBack) {
  PreauthMachine m(tls_port());
  std::string sent;
  const auto collect = [&sent](const std::vector<Action>& actions) {
    for (const auto& action : actions) {
      if (const auto* s = std::get_if<Send>(&action)) {
        sent += s->bytes;
      }
    }
  };
  collect(m.feed("a1 LOGIN alice hunter2\r\n"));
  collect(m.on_login_result(LoginOutcome::failed(LoginFailure::auth_failed)));
  collect(m.feed("a2 AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjM=\r\n"));  // \0alice\0hunter3
  collect(m.on_login_result(LoginOutcome::failed(LoginFailure::auth_failed)));
  collect(m.feed("a3 LOGIN alice \"hunter4\\q\"\r\n"));
  EXPECT_EQ(sent.find("hunter"), std::string::npos) << sent;
}

}  // namespace
}  // namespace iop::proxy
