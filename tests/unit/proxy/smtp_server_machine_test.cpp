#include "proxy/smtp_server_machine.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iop::proxy::smtp {
namespace {

// base64("\0alice@example.com\0secret")
constexpr std::string_view alice_plain = "AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==";

std::string_view reason_name(CloseReason reason) {
  switch (reason) {
    case CloseReason::quit:
      return "quit";
    case CloseReason::protocol_error:
      return "protocol_error";
    case CloseReason::too_many_commands:
      return "too_many_commands";
    case CloseReason::too_many_auth_failures:
      return "too_many_auth_failures";
    case CloseReason::unavailable:
      return "unavailable";
  }
  return "?";
}

// Sends verbatim, other actions as <...> lines (test passwords revealed on purpose).
std::string render(const std::vector<Action>& actions) {
  std::string out;
  for (const auto& action : actions) {
    if (const auto* s = std::get_if<Send>(&action)) {
      out += s->bytes;
    } else if (std::holds_alternative<StartTls>(action)) {
      out += "<StartTls>\n";
    } else if (const auto* c = std::get_if<CheckCredentials>(&action)) {
      out += "<Check " + c->username + " " + c->password.reveal() + " " +
             (c->method == AuthMethod::login ? "login" : "plain") + " " + c->client_name + ">\n";
    } else if (const auto* a = std::get_if<Authenticated>(&action)) {
      out += "<Authenticated " + a->pending + ">\n";
    } else if (const auto* cl = std::get_if<Close>(&action)) {
      out += "<Close " + std::string(reason_name(cl->reason)) + ">\n";
    }
  }
  return out;
}

ServerOptions tls_port() {
  ServerOptions options;
  options.hostname = "proxy.test";
  options.upstream_extensions = {{"SIZE", "1000"}, {"PIPELINING", ""}, {"AUTH", "XOAUTH2"}};
  return options;
}

ServerOptions plain_port() {
  auto options = tls_port();
  options.tls_active = false;
  return options;
}

// Drives a conversation: each CheckCredentials gets the next outcome, each StartTls succeeds.
struct Conversation {
  ServerOptions options;
  std::vector<AuthOutcome> outcomes;

  std::string run(const std::vector<std::string_view>& chunks) const {
    ServerMachine machine(options);
    std::size_t next = 0;
    std::string out = render(machine.start());
    for (const auto chunk : chunks) {
      std::vector<Action> actions = machine.feed(chunk);
      while (!actions.empty()) {
        out += render(actions);
        const bool check = std::holds_alternative<CheckCredentials>(actions.back());
        const bool tls = std::holds_alternative<StartTls>(actions.back());
        actions.clear();
        if (check) {
          actions = machine.on_auth_result(next < outcomes.size() ? outcomes[next++]
                                                                  : AuthOutcome::success());
        } else if (tls) {
          actions = machine.on_tls_started();
        }
      }
    }
    return out;
  }

  // The same result whether the input comes at once, split at every offset, or byte by byte.
  void expect_at_every_split(std::string_view in, const std::string& expected) const {
    EXPECT_EQ(run({in}), expected);
    for (std::size_t i = 0; i <= in.size(); ++i) {
      EXPECT_EQ(run({in.substr(0, i), in.substr(i)}), expected) << "split at " << i;
    }
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < in.size(); ++i) {
      bytes.push_back(in.substr(i, 1));
    }
    EXPECT_EQ(run(bytes), expected);
  }
};

constexpr std::string_view greeting = "220 proxy.test ESMTP imap-oauth2-proxy ready\r\n";
constexpr std::string_view tls_ehlo =
    "250-proxy.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250 AUTH PLAIN LOGIN\r\n";

TEST(SmtpServerMachine, AuthPlainWithInitialResponse) {
  const std::string in = "EHLO client.example\r\nAUTH PLAIN " + std::string(alice_plain) + "\r\n";
  Conversation{tls_port(), {}}.expect_at_every_split(
      in, std::string(greeting) + std::string(tls_ehlo) +
              "<Check alice@example.com secret plain client.example>\n"
              "235 2.7.0 Authentication successful\r\n<Authenticated >\n");
}

TEST(SmtpServerMachine, AuthLoginStepByStepAfterAFailure) {
  // base64("bob"), base64("wrong"), base64("bob"), base64("right")
  const std::string in =
      "ehlo [127.0.0.1]\r\nAUTH LOGIN\r\nYm9i\r\nd3Jvbmc=\r\nAUTH LOGIN Ym9i\r\ncmlnaHQ=\r\n"
      "MAIL FROM:<bob@example.com>\r\n";
  Conversation conversation{tls_port(), {AuthOutcome::failed(AuthFailure::bad_credentials)}};
  const std::string head = std::string(greeting) + std::string(tls_ehlo) +
                           "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
                           "<Check bob wrong login [127.0.0.1]>\n"
                           "535 5.7.8 Authentication credentials invalid\r\n"
                           "334 UGFzc3dvcmQ6\r\n<Check bob right login [127.0.0.1]>\n"
                           "235 2.7.0 Authentication successful\r\n<Authenticated ";
  // The pipelined MAIL goes upstream after the login, whatever the split.
  const std::string all = conversation.run({in});
  EXPECT_EQ(all, head + "MAIL FROM:<bob@example.com>\r\n>\n");
  for (std::size_t i = 0; i <= in.size(); ++i) {
    const std::string out =
        conversation.run({std::string_view(in).substr(0, i), std::string_view(in).substr(i)});
    EXPECT_EQ(out.substr(0, head.size()), head) << "split at " << i;
  }
}

TEST(SmtpServerMachine, PlainPortRequiresStartTlsBeforeAuth) {
  const std::string before =
      "EHLO c\r\nAUTH PLAIN " + std::string(alice_plain) + "\r\nSTARTTLS\r\n";
  const std::string after = "EHLO c\r\nAUTH PLAIN\r\n" + std::string(alice_plain) + "\r\n";
  const std::string expected =
      std::string(greeting) +
      "250-proxy.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
      "250 STARTTLS\r\n"
      "530 5.7.0 Must issue a STARTTLS command first\r\n"
      "220 2.0.0 Ready to start TLS\r\n<StartTls>\n" +
      std::string(tls_ehlo) + "334 \r\n<Check alice@example.com secret plain c>\n" +
      "235 2.7.0 Authentication successful\r\n<Authenticated >\n";
  // The handshake separates what comes before from what comes after: split each at every offset.
  const Conversation conversation{plain_port(), {}};
  const std::string_view b = before;
  const std::string_view a = after;
  for (std::size_t i = 0; i <= b.size(); ++i) {
    EXPECT_EQ(conversation.run({b.substr(0, i), b.substr(i), a}), expected) << "split at " << i;
  }
  for (std::size_t i = 0; i <= a.size(); ++i) {
    EXPECT_EQ(conversation.run({b, a.substr(0, i), a.substr(i)}), expected) << "split at " << i;
  }
}

TEST(SmtpServerMachine, DropsPlaintextPipelinedAfterStartTls) {
  // CVE-2011-0411: the AUTH sent in the same packet as STARTTLS must never be executed.
  ServerMachine m(plain_port());
  m.start();
  m.feed("EHLO c\r\n");
  const auto actions = m.feed("STARTTLS\r\nAUTH PLAIN " + std::string(alice_plain) + "\r\n");
  EXPECT_EQ(render(actions), "220 2.0.0 Ready to start TLS\r\n<StartTls>\n");
  EXPECT_TRUE(m.on_tls_started().empty());
  EXPECT_EQ(m.state(), ServerMachine::State::reading);
  // And the client must EHLO again.
  EXPECT_EQ(render(m.feed("AUTH PLAIN " + std::string(alice_plain) + "\r\n")),
            "503 5.5.1 Send EHLO first\r\n");
}

TEST(SmtpServerMachine, PlaintextLoopbackMayAuthWithoutTls) {
  auto options = plain_port();
  options.allow_plaintext_auth = true;
  const std::string out =
      Conversation{options, {}}.run({"EHLO c\r\nAUTH PLAIN " + std::string(alice_plain) + "\r\n"});
  EXPECT_NE(out.find("250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("<Check alice@example.com secret plain c>"), std::string::npos) << out;
}

TEST(SmtpServerMachine, MailCommandsNeedAuthAndRefusedBdatChunkIsSkipped) {
  const std::string in =
      "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n";
  Conversation{tls_port(), {}}.expect_at_every_split(
      in, std::string(greeting) + std::string(tls_ehlo) +
              "530 5.7.0 Authentication required\r\n530 5.7.0 Authentication required\r\n"
              "530 5.7.0 Authentication required\r\n"
              // The 12-byte chunk ("QUIT\r\nQUIT\r\n") is skipped, not read as commands.
              "250 2.0.0 OK\r\n");
}

TEST(SmtpServerMachine, AnotherAuthorizationIdentityIsARefusalNotADecodeError) {
  // base64("bob@example.com\0alice@example.com\0pw"): acting as bob is refused with 535 and
  // counted, so the third such AUTH closes; a mere "alice" authzid in another case is alice.
  const std::string other = "AUTH PLAIN Ym9iQGV4YW1wbGUuY29tAGFsaWNlQGV4YW1wbGUuY29tAHB3\r\n";
  const std::string refused = "535 5.7.8 Authorization identity must be empty or the user name\r\n";
  Conversation{tls_port(), {}}.expect_at_every_split(
      "EHLO c\r\n" + other + other + other + "NOOP\r\n",
      std::string(greeting) + std::string(tls_ehlo) + refused + refused + refused +
          "421 4.7.0 Too many failed authentications, closing connection\r\n"
          "<Close too_many_auth_failures>\n");
  // base64("ALICE@example.com\0alice@example.com\0pw")
  Conversation{tls_port(), {}}.expect_at_every_split(
      "EHLO c\r\nAUTH PLAIN QUxJQ0VAZXhhbXBsZS5jb20AYWxpY2VAZXhhbXBsZS5jb20AcHc=\r\n",
      std::string(greeting) + std::string(tls_ehlo) +
          "<Check alice@example.com pw plain c>\n235 2.7.0 Authentication successful\r\n"
          "<Authenticated >\n");
}

TEST(SmtpServerMachine, FailuresAndLimits) {
  // Unknown commands and bad syntax count as errors; the tenth closes.
  std::string in = "EHLO\r\n";
  for (int i = 0; i < 9; ++i) {
    in += "BOGUS\r\n";
  }
  in += "NOOP\r\n";
  const std::string out = Conversation{tls_port(), {}}.run({in});
  EXPECT_NE(out.find("501 5.5.4 Syntax: EHLO hostname\r\n"), std::string::npos);
  EXPECT_NE(out.find("421 4.7.0 Too many errors, closing connection\r\n<Close protocol_error>\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("250 2.0.0 OK"), std::string::npos);

  // Three failed AUTHs close the connection.
  const std::string auth = "AUTH PLAIN " + std::string(alice_plain) + "\r\n";
  const std::string three = Conversation{tls_port(),
                                         {AuthOutcome::failed(AuthFailure::bad_credentials),
                                          AuthOutcome::failed(AuthFailure::needs_reauth, "run it"),
                                          AuthOutcome::failed(AuthFailure::bad_credentials)}}
                                .run({"EHLO c\r\n" + auth + auth + auth + "NOOP\r\n"});
  EXPECT_NE(three.find("535 5.7.8 run it\r\n"), std::string::npos) << three;
  EXPECT_NE(three.find("421 4.7.0 Too many failed authentications, closing connection\r\n"
                       "<Close too_many_auth_failures>\n"),
            std::string::npos)
      << three;

  // Temporary trouble is 454 and the client may try again; an unreachable upstream is 421.
  const std::string temp =
      Conversation{tls_port(),
                   {AuthOutcome::failed(AuthFailure::temporary),
                    AuthOutcome::failed(AuthFailure::upstream_unavailable, "Upstream down")}}
          .run({"EHLO c\r\n" + auth + auth + "NOOP\r\n"});
  EXPECT_NE(temp.find("454 4.7.0 Temporary authentication failure\r\n<Check"), std::string::npos)
      << temp;
  EXPECT_NE(temp.find("421 4.4.1 Upstream down, closing connection\r\n<Close unavailable>\n"),
            std::string::npos)
      << temp;
}

TEST(SmtpServerMachine, SaslEdgeCases) {
  const std::string out =
      Conversation{tls_port(), {}}.run({"EHLO c\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\n"
                                        "AUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\nAUTH LOGIN\r\n=\r\n"});
  EXPECT_NE(out.find("334 \r\n501 5.0.0 Authentication canceled\r\n"
                     "501 5.5.2 Cannot decode the AUTH PLAIN response\r\n"
                     "504 5.5.4 Unrecognized authentication type\r\n"
                     "501 5.5.2 Cannot decode the AUTH PLAIN response\r\n"
                     "334 VXNlcm5hbWU6\r\n501 5.5.2 Cannot decode the AUTH LOGIN response\r\n"),
            std::string::npos)
      << out;
}

TEST(SmtpServerMachine, OverlongLinesAreRefusedWithoutBuffering) {
  ServerOptions options = tls_port();
  options.max_line_bytes = 64;
  ServerMachine m(options);
  m.start();
  for (int i = 0; i < 1000; ++i) {
    EXPECT_TRUE(m.feed(std::string(100, 'x')).empty());
  }
  EXPECT_EQ(render(m.feed("\r\nNOOP\r\n")), "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
}

TEST(SmtpServerMachine, AnOverlongResponseEndsTheAuthExchange) {
  // The line after it is a command again, not the user name or password still awaited (a QUIT
  // taken for a user name, a NOOP checked as a password).
  Conversation conversation{tls_port(), {}};
  conversation.options.max_line_bytes = 64;
  const std::string too_long = std::string(100, 'A') + "\r\n";
  const std::string head = std::string(greeting) + std::string(tls_ehlo);
  const std::string refused = "500 5.5.6 Authentication Exchange line is too long\r\n";
  conversation.expect_at_every_split(
      "EHLO c\r\nAUTH LOGIN\r\n" + too_long + "QUIT\r\n",
      head + "334 VXNlcm5hbWU6\r\n" + refused + "221 2.0.0 Bye\r\n<Close quit>\n");
  // base64("bob"), then an over-long password line.
  conversation.expect_at_every_split("EHLO c\r\nAUTH LOGIN Ym9i\r\n" + too_long + "NOOP\r\n",
                                     head + "334 UGFzc3dvcmQ6\r\n" + refused + "250 2.0.0 OK\r\n");
  conversation.expect_at_every_split("EHLO c\r\nAUTH PLAIN\r\n" + too_long + "NOOP\r\n",
                                     head + "334 \r\n" + refused + "250 2.0.0 OK\r\n");
}

TEST(SmtpServerMachine, LineOfExactlyTheLimitIsAcceptedAtEverySplit) {
  ServerOptions options = tls_port();
  options.max_line_bytes = 64;
  const std::string line = "NOOP " + std::string(59, 'x') + "\r\n";  // 64 bytes before CRLF
  for (std::size_t i = 0; i <= line.size(); ++i) {
    ServerMachine m(options);
    m.start();
    std::string out = render(m.feed(std::string_view(line).substr(0, i)));
    out += render(m.feed(std::string_view(line).substr(i)));
    EXPECT_EQ(out, "250 2.0.0 OK\r\n") << "split at " << i;
  }
  // One byte more is too long at every split, with CRLF or a bare LF.
  for (const std::string longer :
       {"NOOP " + std::string(60, 'x') + "\r\n", "NOOP " + std::string(60, 'x') + "\n"}) {
    for (std::size_t i = 0; i <= longer.size(); ++i) {
      ServerMachine m(options);
      m.start();
      std::string out = render(m.feed(std::string_view(longer).substr(0, i)));
      out += render(m.feed(std::string_view(longer).substr(i)));
      EXPECT_EQ(out, "500 5.5.2 Line too long\r\n") << "split at " << i;
    }
  }
}

TEST(SmtpServerMachine, PasswordsNeverSentBack) {
  ServerMachine m(tls_port());
  std::string sent = render(m.start());
  for (const std::string_view in :
       {"EHLO c\r\n", "AUTH LOGIN c2VjcmV0\r\n", "aHVudGVyMg==\r\n", "AUTH PLAIN c2VjcmV0\r\n"}) {
    for (const auto& action : m.feed(in)) {
      if (const auto* s = std::get_if<Send>(&action)) {
        sent += s->bytes;
      }
    }
  }
  EXPECT_EQ(sent.find("secret"), std::string::npos);
  EXPECT_EQ(sent.find("c2VjcmV0"), std::string::npos);
  EXPECT_EQ(sent.find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace iop::proxy::smtp
