// The light upstream (tests/support/light_imap_server.hpp) speaks enough IMAP for the proxy:
// checked here with a plain blocking OpenSSL client that verifies its certificate.

#include "tests/support/light_imap_server.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "tests/support/imap_swarm.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

using namespace std::chrono_literals;

std::string xoauth2(const std::string& user, const std::string& token) {
  const std::string message = "user=" + user + "\x01" + "auth=Bearer " + token + "\x01\x01";
  std::string out(4 * ((message.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(message.data()),
                                static_cast<int>(message.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// One blocking TLS connection to the server, "localhost" verified against its CA; every read
// is bounded by a 10 s socket timeout.
class Client {
 public:
  explicit Client(const LightImapServer& server)
      : ctx_(new_client_tls_context(server.ca_file(), false)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect failed");
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    if (SSL_connect(ssl_) != 1) {
      throw std::runtime_error("TLS handshake failed");
    }
  }
  ~Client() {
    SSL_free(ssl_);
    ::close(fd_);
    SSL_CTX_free(ctx_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void send(const std::string& line) {
    SSL_write(ssl_, line.data(), static_cast<int>(line.size()));
  }
  // The next line without its CRLF; "" once the server has closed.
  std::string line() {
    for (;;) {
      if (const auto end = in_.find("\r\n"); end != std::string::npos) {
        std::string out = in_.substr(0, end);
        in_.erase(0, end + 2);
        return out;
      }
      char buf[4096];
      const int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) {
        return {};
      }
      in_.append(buf, static_cast<std::size_t>(n));
    }
  }
  // Sends `command` and returns every line up to and including the tagged one, joined by "\n".
  std::string run(const std::string& tag, const std::string& command) {
    send(tag + " " + command + "\r\n");
    std::string out;
    for (std::string l = line(); !l.empty(); l = line()) {
      out += l + "\n";
      if (l.rfind(tag + " ", 0) == 0) {
        break;
      }
    }
    return out;
  }

 private:
  SSL_CTX* ctx_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string in_;
};

TEST(LightImapServerTest, SaslIrLoginThenCapabilityListIdleNoopLogout) {
  LightImapServer server;
  Client c(server);
  EXPECT_EQ(c.line(),
            "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE] light IMAP server ready");
  EXPECT_EQ(c.run("a", "CAPABILITY"),
            "* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE\na OK CAPABILITY completed\n");
  EXPECT_EQ(c.run("b", "LIST \"\" \"\""), "b BAD command unknown or not allowed in this state\n");
  EXPECT_EQ(c.run("c", "AUTHENTICATE XOAUTH2 " + xoauth2("ann@example.com", "any")),
            "c OK AUTHENTICATE completed\n");
  EXPECT_EQ(server.logins(), 1u);
  EXPECT_EQ(server.logins_of().at("ann@example.com"), 1u);
  EXPECT_EQ(c.run("d", "CAPABILITY"), "* CAPABILITY IMAP4rev1 IDLE\nd OK CAPABILITY completed\n");
  EXPECT_EQ(c.run("e", "LIST \"\" \"\""), "* LIST (\\Noselect) \"/\" \"\"\ne OK LIST completed\n");
  c.send("f IDLE\r\n");
  EXPECT_EQ(c.line(), "+ idling");
  c.send("DONE\r\n");
  EXPECT_EQ(c.line(), "f OK IDLE terminated");
  EXPECT_EQ(c.run("g", "NOOP"), "g OK NOOP completed\n");
  EXPECT_EQ(server.live_sessions(), 1u);
  EXPECT_EQ(server.authenticated_sessions(), 1u);
  EXPECT_EQ(c.run("h", "LOGOUT"), "* BYE logging out\nh OK LOGOUT completed\n");
  EXPECT_EQ(c.line(), "");  // closed
  EXPECT_TRUE(wait_until([&] { return server.live_sessions() == 0; }, 10s, "the close"));
  EXPECT_EQ(server.authenticated_sessions(), 0u);
}

TEST(LightImapServerTest, ContinuationAndTheFailureChallengeForAWrongToken) {
  LightImapServer server;
  server.set_accepted_token("right-token");
  Client c(server);
  c.line();  // greeting
  // A wrong token: the JSON error challenge, the client's empty line, then NO (RFC 7628 §3.2.3).
  c.send("a AUTHENTICATE XOAUTH2\r\n");
  EXPECT_EQ(c.line(), "+ ");
  c.send(xoauth2("ann@example.com", "wrong-token") + "\r\n");
  EXPECT_EQ(c.line().rfind("+ ey", 0), 0u);  // base64 of {"status":"401",...}
  c.send("\r\n");
  EXPECT_EQ(c.line(), "a NO [AUTHENTICATIONFAILED] Authentication failed.");
  EXPECT_EQ(server.failed_logins(), 1u);
  EXPECT_EQ(server.logins(), 0u);
  // "*" cancels (RFC 9051 §6.2.2).
  c.send("b AUTHENTICATE XOAUTH2\r\n");
  EXPECT_EQ(c.line(), "+ ");
  c.send("*\r\n");
  EXPECT_EQ(c.line(), "b BAD AUTHENTICATE cancelled");
  // The right token through the continuation.
  c.send("c AUTHENTICATE XOAUTH2\r\n");
  EXPECT_EQ(c.line(), "+ ");
  c.send(xoauth2("ann@example.com", "right-token") + "\r\n");
  EXPECT_EQ(c.line(), "c OK AUTHENTICATE completed");
  EXPECT_EQ(server.logins_of().at("ann@example.com"), 1u);
  EXPECT_EQ(server.authenticated_sessions(), 1u);
}

TEST(LightImapServerTest, StopClosesHeldSessions) {
  LightImapServer server;
  Client a(server);
  Client b(server);
  a.line();
  b.line();
  EXPECT_TRUE(wait_until([&] { return server.live_sessions() == 2; }, 10s, "two sessions"));
  server.stop();
  EXPECT_EQ(server.live_sessions(), 0u);
  EXPECT_EQ(a.line(), "");
  EXPECT_EQ(b.line(), "");
}

}  // namespace
}  // namespace iop::test
