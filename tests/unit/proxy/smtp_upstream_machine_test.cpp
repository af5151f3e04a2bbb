#include "proxy/smtp_upstream_machine.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace iop::proxy::smtp {
namespace {

using namespace upstream;

// Sends verbatim with "C: ", other actions as <...> lines (test tokens revealed on purpose).
std::string render(const std::vector<Action>& actions) {
  std::string out;
  for (const auto& action : actions) {
    if (const auto* s = std::get_if<Send>(&action)) {
      out += "C: " + s->bytes.reveal();
    } else if (std::holds_alternative<StartTls>(action)) {
      out += "<StartTls>\n";
    } else if (const auto* d = std::get_if<Done>(&action)) {
      out += "<Done " + std::to_string(d->extensions.size()) + " pending=" + d->pending + ">\n";
    } else if (const auto* f = std::get_if<Failed>(&action)) {
      out += "<Failed " + std::string(to_string(f->kind)) + " " + std::to_string(f->code) + " " +
             f->detail + ">\n";
    }
  }
  return out;
}

UpstreamLoginOptions options(bool tls, std::string ir = "dG9rZW4=") {
  UpstreamLoginOptions o;
  o.tls_active = tls;
  o.ehlo_name = "client.example";
  o.initial_response = Secret(std::move(ir));
  return o;
}

// Feeds the server's side in `chunks`; each StartTls is answered with on_tls_started().
std::string run(UpstreamLoginOptions o, const std::vector<std::string_view>& chunks) {
  UpstreamLoginMachine machine(std::move(o));
  std::string out;
  for (const auto chunk : chunks) {
    auto actions = machine.feed(chunk);
    out += render(actions);
    if (!actions.empty() && std::holds_alternative<StartTls>(actions.back())) {
      out += render(machine.on_tls_started());
    }
  }
  return out;
}

constexpr std::string_view ehlo_reply =
    "250-smtp.example\r\n250-SIZE 100\r\n250-AUTH LOGIN XOAUTH2\r\n250 8BITMIME\r\n";

TEST(SmtpUpstreamMachine, ImplicitTlsWithSaslIr) {
  const std::string server = "220 smtp.example ESMTP\r\n" + std::string(ehlo_reply) +
                             "235 2.7.0 Authentication successful\r\n";
  const std::string expected =
      "C: EHLO client.example\r\nC: AUTH XOAUTH2 dG9rZW4=\r\n<Done 3 pending=>\n";
  // Reply by reply, as a server answers: the split must not matter.
  EXPECT_EQ(run(options(true), {"220 smtp.example ESMTP\r\n", ehlo_reply,
                                "235 2.7.0 Authentication successful\r\n"}),
            expected);
  for (std::size_t i = 0; i <= server.size(); ++i) {
    EXPECT_EQ(run(options(true),
                  {std::string_view(server).substr(0, i), std::string_view(server).substr(i)}),
              expected)
        << "split at " << i;
  }
}

TEST(SmtpUpstreamMachine, StartTlsThenLongTokenOnTheContinuation) {
  const std::string token(1500, 'A');
  const std::string out =
      run(options(false, token),
          {"220 hi\r\n", "250-smtp.example\r\n250-STARTTLS\r\n250 AUTH XOAUTH2\r\n",
           "220 2.0.0 go ahead\r\n", "250-smtp.example\r\n250 AUTH XOAUTH2\r\n", "334 \r\n",
           "235 ok\r\n"});
  EXPECT_EQ(out,
            "C: EHLO client.example\r\nC: STARTTLS\r\n<StartTls>\nC: EHLO client.example\r\n"
            "C: AUTH XOAUTH2\r\nC: " +
                token + "\r\n<Done 1 pending=>\n");
}

TEST(SmtpUpstreamMachine, ErrorChallengeGetsAnEmptyLineThenFails) {
  // base64({"status":"401","schemes":"bearer"})
  const std::string out =
      run(options(true),
          {"220 hi\r\n", ehlo_reply, "334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n",
           "535 5.7.3 Authentication unsuccessful\r\n"});
  EXPECT_EQ(out,
            "C: EHLO client.example\r\nC: AUTH XOAUTH2 dG9rZW4=\r\nC: \r\n"
            "<Failed auth_rejected 535 AUTH answered 535 5.7.3 Authentication unsuccessful "
            "(challenge: {\"status\":\"401\",\"schemes\":\"bearer\"})>\n");
}

TEST(SmtpUpstreamMachine, ClassifiesFailures) {
  EXPECT_EQ(run(options(true), {"421 4.3.2 busy\r\n"}),
            "<Failed unavailable 421 greeting answered 421 4.3.2 busy>\n");
  EXPECT_EQ(run(options(true), {"554 no service\r\n"}),
            "<Failed unavailable 554 greeting answered 554 no service>\n");
  EXPECT_EQ(run(options(true), {"220 hi\r\n", ehlo_reply, "454 4.7.0 try later\r\n"}),
            "C: EHLO client.example\r\nC: AUTH XOAUTH2 dG9rZW4=\r\n"
            "<Failed unavailable 454 AUTH answered 454 4.7.0 try later>\n");
  // A plain port without STARTTLS: the token is never sent.
  const std::string no_tls = run(options(false), {"220 hi\r\n", ehlo_reply});
  EXPECT_NE(no_tls.find("<Failed protocol 0 upstream does not offer STARTTLS"), std::string::npos)
      << no_tls;
  EXPECT_EQ(no_tls.find("AUTH XOAUTH2 "), std::string::npos);
  // No XOAUTH2 on offer.
  EXPECT_EQ(run(options(true), {"220 hi\r\n", "250-h\r\n250 AUTH PLAIN\r\n"}),
            "C: EHLO client.example\r\n"
            "<Failed protocol 0 upstream does not offer AUTH XOAUTH2 (it offers: AUTH PLAIN)>\n");
  // Garbage instead of a reply.
  EXPECT_EQ(run(options(true), {"* OK IMAP4rev1 ready\r\n"}),
            "<Failed protocol 0 upstream reply: malformed reply line (not a three-digit code)>\n");
}

TEST(SmtpUpstreamMachine, ProbeStopsAfterTheEhloOverTls) {
  auto o = options(false);
  o.mechanism.clear();
  EXPECT_EQ(run(std::move(o), {"220 hi\r\n", "250-h\r\n250 STARTTLS\r\n", "220 go\r\n",
                               "250-h\r\n250-SIZE 5\r\n250 AUTH XOAUTH2\r\n"}),
            "C: EHLO client.example\r\nC: STARTTLS\r\n<StartTls>\nC: EHLO client.example\r\n"
            "<Done 2 pending=>\n");
}

TEST(SmtpUpstreamMachine, BoundsWhatTheServerMaySend) {
  auto o = options(true);
  o.max_total_bytes = 1000;
  UpstreamLoginMachine machine(std::move(o));
  std::string out = render(machine.feed("220 hi\r\n"));
  for (int i = 0; i < 100 && !machine.finished(); ++i) {
    out += render(machine.feed("250-SIZE 1\r\n"));
  }
  EXPECT_TRUE(machine.finished());
  EXPECT_NE(out.find("<Failed protocol 0 upstream sent more than 1000 bytes"), std::string::npos)
      << out;
}

}  // namespace
}  // namespace iop::proxy::smtp
