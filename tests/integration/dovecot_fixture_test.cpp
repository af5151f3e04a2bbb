// The Dovecot upstream fixture against real clients: XOAUTH2 with tokens from the test token
// endpoint (validated by Dovecot through its introspection URL), the password user, STARTTLS,
// delivery seen by IDLE, restart, and 200 simultaneous logins of one account.
//
// The IMAP client here is deliberately tiny and blocking (OpenSSL on a socket with receive and
// send timeouts, so nothing can hang the suite). Each IMAP line, CRLF included, goes out in one
// write (Dovecot quirk 1 in shared/TESTING.md).

#include "tests/support/dovecot_server.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <iostream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/base64.hpp"
#include "auth/http_client.hpp"
#include "certs/tls_context.hpp"
#include "tests/support/token_endpoint_peer.hpp"

namespace iop::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr const char* oauth_user = "alice@example.com";
constexpr const char* password_user = "bob@example.com";
constexpr const char* password = "correct horse";

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

// A blocking IMAP connection to 127.0.0.1 with 15-second I/O timeouts.
class ImapConnection {
 public:
  // Connects to `port` from `source` (any 127/8 address); with `tls`, handshakes at once
  // (implicit TLS) trusting `ca_file` and verifying `host`. Reads the greeting.
  ImapConnection(int port, bool tls, const std::filesystem::path& ca_file = {},
                 const std::string& host = "localhost", const char* source = "127.0.0.1") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const timeval tv{15, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &local.sin_addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
      ::close(fd_);
      fd_ = -1;
      throw std::runtime_error(std::string("cannot bind to ") + source);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
      throw std::runtime_error("connect to port " + std::to_string(port) + " failed");
    }
    if (tls) {
      start_tls(ca_file, host);
    }
    greeting_ = read_line();
  }
  ~ImapConnection() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
    }
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  ImapConnection(const ImapConnection&) = delete;
  ImapConnection& operator=(const ImapConnection&) = delete;

  [[nodiscard]] const std::string& greeting() const { return greeting_; }

  // TLS on the open socket (after STARTTLS's OK, or at connect).
  void start_tls(const std::filesystem::path& ca_file, const std::string& host) {
    auto ctx = certs::make_client_context(ca_file);
    if (!ctx) {
      throw std::runtime_error(ctx.error().message);
    }
    ctx_ = *ctx;
    ssl_ = SSL_new(ctx_->native_handle());
    if (auto id = certs::set_server_identity(ssl_, host); !id) {
      throw std::runtime_error(id.error().message);
    }
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) {
      char buf[256];
      ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
      throw std::runtime_error(std::string("TLS handshake failed: ") + buf);
    }
  }

  // Sends `line` + CRLF in one write.
  void send_line(const std::string& line) {
    const std::string data = line + "\r\n";
    const int n = ssl_ != nullptr
                      ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
                      : static_cast<int>(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL));
    if (n != static_cast<int>(data.size())) {
      throw std::runtime_error("short write");
    }
  }

  // One line without its CRLF; throws on EOF or timeout.
  std::string read_line() {
    for (;;) {
      if (const auto eol = buffer_.find("\r\n"); eol != std::string::npos) {
        std::string line = buffer_.substr(0, eol);
        buffer_.erase(0, eol + 2);
        return line;
      }
      char buf[4096];
      const int n = ssl_ != nullptr ? SSL_read(ssl_, buf, sizeof buf)
                                    : static_cast<int>(::recv(fd_, buf, sizeof buf, 0));
      if (n <= 0) {
        throw std::runtime_error("connection closed or timed out; had: " + buffer_);
      }
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

  // Sends `tag` `text`, returns every line up to and including the tagged one.
  std::vector<std::string> command(const std::string& tag, const std::string& text) {
    send_line(tag + " " + text);
    return read_until_tagged(tag);
  }

  std::vector<std::string> read_until_tagged(const std::string& tag) {
    std::vector<std::string> lines;
    do {
      lines.push_back(read_line());
    } while (!starts_with(lines.back(), tag + " "));
    return lines;
  }

 private:
  int fd_ = -1;
  std::shared_ptr<boost::asio::ssl::context> ctx_;
  SSL* ssl_ = nullptr;
  std::string buffer_;
  std::string greeting_;
};

std::string xoauth2(const std::string& user, const std::string& token) {
  return auth::base64_encode("user=" + user + "\x01" + "auth=Bearer " + token + "\x01\x01");
}

class DovecotFixtureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dovecot_ = std::make_unique<DovecotServer>(peer_.introspect_url(), password_user, password);
  }

  void TearDown() override {
    if (HasFailure() && dovecot_) {
      std::cerr << "---- dovecot log ----\n" << dovecot_->log() << "---- end ----\n";
    }
  }

  // A fresh access token for `email` from the peer: a refresh grant, as the proxy makes.
  std::string access_token(const std::string& email) {
    const std::string refresh_token = peer_.add_account(email);
    const auto r = auth::post_form(peer_.token_url(),
                                   {{"grant_type", Secret(std::string("refresh_token"))},
                                    {"client_id", Secret(std::string("test-client"))},
                                    {"refresh_token", Secret(refresh_token)}},
                                   auth::HttpOptions{});
    if (!r || r->status != 200) {
      throw std::runtime_error("no token from the peer");
    }
    return json::parse(r->body).at("access_token").get<std::string>();
  }

  ImapConnection imaps() {
    return ImapConnection(dovecot_->imaps_port(), true, dovecot_->ca_file());
  }

  TokenEndpointPeer peer_;
  std::unique_ptr<DovecotServer> dovecot_;
};

TEST_F(DovecotFixtureTest, XOAuth2WithSaslIrThenSelectAndLogout) {
  const std::string token = access_token(oauth_user);
  ImapConnection c = imaps();
  EXPECT_TRUE(starts_with(c.greeting(), "* OK")) << c.greeting();
  EXPECT_NE(c.greeting().find("AUTH=XOAUTH2"), std::string::npos) << c.greeting();
  EXPECT_NE(c.greeting().find("SASL-IR"), std::string::npos) << c.greeting();

  auto login = c.command("a1", "AUTHENTICATE XOAUTH2 " + xoauth2(oauth_user, token));
  ASSERT_TRUE(starts_with(login.back(), "a1 OK")) << login.back();
  EXPECT_NE(login.back().find("IDLE"), std::string::npos) << "post-login capabilities expected";

  auto select = c.command("a2", "SELECT INBOX");
  EXPECT_TRUE(starts_with(select.back(), "a2 OK")) << select.back();
  auto logout = c.command("a3", "LOGOUT");
  EXPECT_TRUE(starts_with(logout.front(), "* BYE")) << logout.front();
  EXPECT_TRUE(starts_with(logout.back(), "a3 OK")) << logout.back();
}

TEST_F(DovecotFixtureTest, XOAuth2WithContinuation) {
  const std::string token = access_token(oauth_user);
  ImapConnection c = imaps();
  c.send_line("a1 AUTHENTICATE XOAUTH2");
  const std::string plus = c.read_line();
  ASSERT_TRUE(starts_with(plus, "+")) << plus;
  c.send_line(xoauth2(oauth_user, token));
  const auto done = c.read_until_tagged("a1");
  EXPECT_TRUE(starts_with(done.back(), "a1 OK")) << done.back();
}

TEST_F(DovecotFixtureTest, BadTokenGetsFailureChallengeThenNo) {
  ImapConnection c = imaps();
  c.send_line("a1 AUTHENTICATE XOAUTH2 " + xoauth2(oauth_user, "at.not-a-real-token"));
  const std::string challenge = c.read_line();
  ASSERT_TRUE(starts_with(challenge, "+ ")) << challenge;
  const auto decoded = auth::base64_decode(challenge.substr(2));
  ASSERT_TRUE(decoded.has_value()) << challenge;
  EXPECT_NE(decoded->find("\"status\""), std::string::npos) << *decoded;
  c.send_line("");  // the empty response the protocol requires
  const auto done = c.read_until_tagged("a1");
  EXPECT_TRUE(starts_with(done.back(), "a1 NO [AUTHENTICATIONFAILED]")) << done.back();
}

TEST_F(DovecotFixtureTest, TokenOfAnotherUserIsRejected) {
  const std::string token = access_token("mallory@example.com");
  ImapConnection c = imaps();
  c.send_line("a1 AUTHENTICATE XOAUTH2 " + xoauth2(oauth_user, token));
  std::string line = c.read_line();
  if (starts_with(line, "+")) {
    c.send_line("");
    line = c.read_until_tagged("a1").back();
  }
  EXPECT_TRUE(starts_with(line, "a1 NO")) << line;
}

TEST_F(DovecotFixtureTest, PasswordUserCanLogin) {
  ImapConnection c = imaps();
  auto ok = c.command("a1", std::string("LOGIN ") + password_user + " \"" + password + "\"");
  EXPECT_TRUE(starts_with(ok.back(), "a1 OK")) << ok.back();

  ImapConnection wrong = imaps();
  auto no = wrong.command("a1", std::string("LOGIN ") + password_user + " \"wrong\"");
  EXPECT_TRUE(starts_with(no.back(), "a1 NO [AUTHENTICATIONFAILED]")) << no.back();
}

TEST_F(DovecotFixtureTest, StartTlsOnThePlainPort) {
  // From 127.0.0.2: Dovecot counts a client whose address equals its own as secured and would
  // allow plaintext LOGIN without STARTTLS (see dovecot_server.hpp).
  ImapConnection c(dovecot_->imap_port(), false, {}, "localhost", "127.0.0.2");
  EXPECT_NE(c.greeting().find("STARTTLS"), std::string::npos) << c.greeting();
  EXPECT_NE(c.greeting().find("LOGINDISABLED"), std::string::npos) << c.greeting();
  auto refused = c.command("a0", std::string("LOGIN ") + password_user + " \"" + password + "\"");
  EXPECT_TRUE(starts_with(refused.back(), "a0 NO [PRIVACYREQUIRED]")) << refused.back();

  auto starttls = c.command("a1", "STARTTLS");
  ASSERT_TRUE(starts_with(starttls.back(), "a1 OK")) << starttls.back();
  c.start_tls(dovecot_->ca_file(), "127.0.0.1");
  auto login = c.command("a2", std::string("LOGIN ") + password_user + " \"" + password + "\"");
  EXPECT_TRUE(starts_with(login.back(), "a2 OK")) << login.back();
}

TEST_F(DovecotFixtureTest, UntrustedClientFailsTheHandshake) {
  // Trusting only the system store, the fixture's certificate must not verify.
  EXPECT_THROW(ImapConnection(dovecot_->imaps_port(), true, std::filesystem::path{}),
               std::runtime_error);
}

TEST_F(DovecotFixtureTest, DeliveredMessageReachesAnIdlingSession) {
  ImapConnection c = imaps();
  ASSERT_TRUE(starts_with(
      c.command("a1", std::string("LOGIN ") + password_user + " \"" + password + "\"").back(),
      "a1 OK"));
  auto select = c.command("a2", "SELECT INBOX");
  ASSERT_TRUE(starts_with(select.back(), "a2 OK")) << select.back();
  EXPECT_NE(std::find(select.begin(), select.end(), "* 0 EXISTS"), select.end());

  c.send_line("a3 IDLE");
  const std::string idling = c.read_line();
  ASSERT_TRUE(starts_with(idling, "+")) << idling;
  dovecot_->deliver(password_user,
                    "From: carol@example.com\r\nTo: bob@example.com\r\nSubject: while idle\r\n"
                    "\r\nHello.\r\n");
  // Bounded by the connection's read timeout; Dovecot notices the new message via inotify.
  std::string update;
  do {
    update = c.read_line();
  } while (update.find("EXISTS") == std::string::npos);
  EXPECT_EQ(update, "* 1 EXISTS");
  c.send_line("DONE");
  EXPECT_TRUE(starts_with(c.read_until_tagged("a3").back(), "a3 OK"));
  auto fetch = c.command("a4", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
  bool seen = false;
  for (const auto& line : fetch) {
    seen = seen || line.find("Subject: while idle") != std::string::npos;
  }
  EXPECT_TRUE(seen);
}

TEST_F(DovecotFixtureTest, DeliverCreatesAnOAuthUsersMailbox) {
  dovecot_->deliver(oauth_user, "Subject: first\r\n\r\nbody\r\n");
  const std::string token = access_token(oauth_user);
  ImapConnection c = imaps();
  ASSERT_TRUE(starts_with(
      c.command("a1", "AUTHENTICATE XOAUTH2 " + xoauth2(oauth_user, token)).back(), "a1 OK"));
  auto select = c.command("a2", "SELECT INBOX");
  EXPECT_NE(std::find(select.begin(), select.end(), "* 1 EXISTS"), select.end());
}

TEST_F(DovecotFixtureTest, StopAndStartKeepPortsAndMail) {
  dovecot_->deliver(password_user, "Subject: kept\r\n\r\nbody\r\n");
  dovecot_->stop();
  EXPECT_FALSE(dovecot_->running());
  EXPECT_THROW(ImapConnection(dovecot_->imaps_port(), true, dovecot_->ca_file()),
               std::runtime_error);
  dovecot_->start();
  ImapConnection c = imaps();
  ASSERT_TRUE(starts_with(
      c.command("a1", std::string("LOGIN ") + password_user + " \"" + password + "\"").back(),
      "a1 OK"));
  auto select = c.command("a2", "SELECT INBOX");
  EXPECT_NE(std::find(select.begin(), select.end(), "* 1 EXISTS"), select.end());
}

TEST_F(DovecotFixtureTest, TwoHundredSimultaneousLoginsOfOneAccount) {
  constexpr int sessions = 200;
  const std::string token = access_token(oauth_user);
  std::vector<std::unique_ptr<ImapConnection>> connections(sessions);
  std::vector<std::string> outcomes(sessions);
  std::mutex mutex;
  std::condition_variable all_in;
  int logged_in = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < sessions; ++i) {
    threads.emplace_back([&, i] {
      try {
        auto c =
            std::make_unique<ImapConnection>(dovecot_->imaps_port(), true, dovecot_->ca_file());
        outcomes[i] = c->command("a1", "AUTHENTICATE XOAUTH2 " + xoauth2(oauth_user, token)).back();
        connections[i] = std::move(c);
      } catch (const std::exception& e) {
        outcomes[i] = e.what();
      }
      // Every session stays open until all have tried: they are simultaneous sessions.
      std::unique_lock lock(mutex);
      ++logged_in;
      all_in.notify_all();
      all_in.wait(lock, [&] { return logged_in == sessions; });
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  int ok = 0;
  for (int i = 0; i < sessions; ++i) {
    if (starts_with(outcomes[i], "a1 OK")) {
      ++ok;
    } else {
      ADD_FAILURE() << "session " << i << ": " << outcomes[i];
    }
  }
  EXPECT_EQ(ok, sessions);
  // All still alive together.
  int alive = 0;
  for (auto& c : connections) {
    if (c && starts_with(c->command("n", "NOOP").back(), "n OK")) {
      ++alive;
    }
  }
  EXPECT_EQ(alive, sessions);
}

}  // namespace
}  // namespace iop::test
