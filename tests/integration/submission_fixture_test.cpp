// The submission peers on their own: Dovecot's submission service (AUTH XOAUTH2 checked through
// the test token endpoint's introspection) relaying into the aiosmtpd sink. The proxy's
// submission tests (submission_test.cpp) stand on this.

#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "auth/http_client.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/smtp_sink.hpp"
#include "tests/support/token_endpoint_peer.hpp"

namespace iop::test {
namespace {

using json = nlohmann::json;

// Python's smtplib (a real sender): sends one message with AUTH XOAUTH2 (initial response on the
// AUTH line) over implicit TLS trusting `ca`; prints the server's last reply on failure.
constexpr const char* send_xoauth2 = R"(
import base64, smtplib, ssl, sys
port, ca, user, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP_SSL("localhost", port, context=ctx, timeout=20)
s.ehlo("sender.test")
ir = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()).decode()
code, text = s.docmd("AUTH", "XOAUTH2 " + ir)
if code != 235:
    print(code, text.decode()); sys.exit(2)
s.sendmail(user, ["rcpt@example.net"], "Subject: fixture\r\n\r\nhello from the fixture\r\n")
s.quit()
)";

TEST(SubmissionFixture, DovecotSubmissionRelaysXoauth2MailToTheSink) {
  TokenEndpointPeer peer;
  SmtpSink sink;
  DovecotServer dovecot(peer.introspect_url(), "bob@example.com", "pw",
                        DovecotOptions{sink.port()});
  const std::string refresh = peer.add_account("alice@example.com");
  const auto r = auth::post_form(peer.token_url(),
                                 {{"grant_type", Secret(std::string("refresh_token"))},
                                  {"client_id", Secret(std::string("test-client"))},
                                  {"refresh_token", Secret(refresh)}},
                                 auth::HttpOptions{});
  ASSERT_TRUE(r && r->status == 200);
  const auto token = json::parse(r->body).at("access_token").get<std::string>();

  const auto sent = run_command({"/usr/bin/python3", "-c", send_xoauth2,
                                 std::to_string(dovecot.submissions_port()),
                                 dovecot.ca_file().string(), "alice@example.com", token});
  ASSERT_EQ(sent.exit_code, 0) << sent.out << sent.err << dovecot.log();
  ASSERT_TRUE(sink.wait_for_messages(1));
  const auto message = sink.messages().at(0);
  EXPECT_NE(message.find("X-MailFrom: alice@example.com"), std::string::npos) << message;
  EXPECT_EQ(message_body(message), "hello from the fixture\n") << message;

  // A token the endpoint never issued gets the XOAUTH2 error challenge (a 334 with a base64 JSON
  // status) that the proxy's upstream login must answer with an empty line.
  const auto refused = run_command({"/usr/bin/python3", "-c", send_xoauth2,
                                    std::to_string(dovecot.submissions_port()),
                                    dovecot.ca_file().string(), "alice@example.com", "bogus"});
  EXPECT_EQ(refused.exit_code, 2) << refused.out << refused.err;
  EXPECT_EQ(refused.out.rfind("334 ", 0), 0u) << refused.out;
}

}  // namespace
}  // namespace iop::test
