// Real TLS handshakes on loopback between make_server_context() with the generated certificate
// and make_client_context() trusting its CA, with the host name checked per connection.

#include "certs/tls_context.hpp"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "certs/local_cert.hpp"
#include "common/asio.hpp"
#include "tests/support/process.hpp"

namespace iop::certs {
namespace {

namespace fs = std::filesystem;
namespace ssl = net::ssl;

struct Handshake {
  boost::system::error_code client;
  boost::system::error_code server;
  std::string version;   // as the client saw it
  std::string received;  // what the client read after the handshake
};

// One connection over real loopback TCP: the server handshakes then writes "hello"; the client
// sets its identity for `host`, handshakes and reads 5 bytes. `tweak` adjusts the client SSL*.
template <class Tweak>
Handshake handshake(ssl::context& server_ctx, ssl::context& client_ctx, const std::string& host,
                    Tweak tweak) {
  net::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  ssl::stream<tcp::socket> server(ioc, server_ctx);
  ssl::stream<tcp::socket> client(ioc, client_ctx);
  Handshake out;
  std::string greeting = "hello";
  std::string buffer(5, '\0');

  acceptor.async_accept(server.next_layer(), [&](boost::system::error_code ec) {
    if (ec) {
      out.server = ec;
      return;
    }
    server.async_handshake(ssl::stream_base::server, [&](boost::system::error_code hs) {
      out.server = hs;
      if (!hs) {
        net::async_write(server, net::buffer(greeting),
                         [](boost::system::error_code, std::size_t) {});
      }
    });
  });
  const auto identity = set_server_identity(client.native_handle(), host);
  EXPECT_TRUE(identity.has_value()) << identity.error().message;
  tweak(client.native_handle());
  client.next_layer().async_connect(acceptor.local_endpoint(), [&](boost::system::error_code ec) {
    if (ec) {
      out.client = ec;
      return;
    }
    client.async_handshake(ssl::stream_base::client, [&](boost::system::error_code hs) {
      out.client = hs;
      if (hs) {
        client.next_layer().close();  // the server, if still waiting, then sees the end
        return;
      }
      out.version = SSL_get_version(client.native_handle());
      net::async_read(client, net::buffer(buffer),
                      [&](boost::system::error_code rd, std::size_t n) {
                        if (!rd) {
                          out.received = buffer.substr(0, n);
                        }
                      });
    });
  });
  ioc.run();
  return out;
}

Handshake handshake(ssl::context& server_ctx, ssl::context& client_ctx, const std::string& host) {
  return handshake(server_ctx, client_ctx, host, [](SSL*) {});
}

class TlsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto made = ensure_server_certificate(cert(), key());
    ASSERT_TRUE(made.has_value()) << made.error().message;
    auto server = make_server_context(cert(), key());
    ASSERT_TRUE(server.has_value()) << server.error().message;
    server_ = *server;
    auto client = make_client_context(ca_certificate_path(cert()));
    ASSERT_TRUE(client.has_value()) << client.error().message;
    client_ = *client;
  }

  fs::path cert() const { return dir_.path() / "server.crt"; }
  fs::path key() const { return dir_.path() / "server.key"; }

  test::TempDir dir_;
  std::shared_ptr<ssl::context> server_;
  std::shared_ptr<ssl::context> client_;
};

class TlsHostTest : public TlsContextTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(TlsHostTest, ClientTrustingTheLocalCaVerifiesEachLoopbackName) {
  const Handshake h = handshake(*server_, *client_, GetParam());
  EXPECT_FALSE(h.client) << h.client.message();
  EXPECT_FALSE(h.server) << h.server.message();
  EXPECT_EQ(h.received, "hello");
  // Not capped at TLS 1.2 (STYLE.md check 9).
  EXPECT_EQ(h.version, "TLSv1.3");
}

INSTANTIATE_TEST_SUITE_P(LoopbackNames, TlsHostTest,
                         ::testing::Values("localhost", "127.0.0.1", "::1"));

TEST_F(TlsContextTest, WrongHostNameFailsVerification) {
  const Handshake h = handshake(*server_, *client_, "mail.example.com");
  ASSERT_TRUE(h.client);
  EXPECT_NE(h.client.message().find("certificate verify failed"), std::string::npos)
      << h.client.message();
  EXPECT_TRUE(h.received.empty());
}

TEST_F(TlsContextTest, SystemStoreDoesNotTrustTheLocalCa) {
  auto system_client = make_client_context();
  ASSERT_TRUE(system_client.has_value()) << system_client.error().message;
  const Handshake h = handshake(*server_, **system_client, "localhost");
  ASSERT_TRUE(h.client);
  EXPECT_NE(h.client.message().find("certificate verify failed"), std::string::npos)
      << h.client.message();
}

TEST_F(TlsContextTest, Tls12StillWorksWithAnAeadSuite) {
  const Handshake h = handshake(*server_, *client_, "localhost",
                                [](SSL* s) { SSL_set_max_proto_version(s, TLS1_2_VERSION); });
  EXPECT_FALSE(h.client) << h.client.message();
  EXPECT_EQ(h.version, "TLSv1.2");
  EXPECT_EQ(h.received, "hello");
}

TEST_F(TlsContextTest, ServerRefusesTls11) {
  const Handshake h = handshake(*server_, *client_, "localhost", [](SSL* s) {
    // Let the client itself offer TLS 1.1 with its old suites.
    SSL_set_security_level(s, 0);
    SSL_set_cipher_list(s, "DEFAULT:@SECLEVEL=0");
    SSL_set_min_proto_version(s, TLS1_1_VERSION);
    SSL_set_max_proto_version(s, TLS1_1_VERSION);
  });
  EXPECT_TRUE(h.client);
  ASSERT_TRUE(h.server);
  EXPECT_NE(h.server.message().find("unsupported protocol"), std::string::npos)
      << h.server.message();
}

TEST_F(TlsContextTest, ContextsDisableCompressionAndRenegotiation) {
  for (const auto& ctx : {server_, client_}) {
    const auto options = SSL_CTX_get_options(ctx->native_handle());
    EXPECT_NE(options & SSL_OP_NO_COMPRESSION, 0u);
    EXPECT_NE(options & SSL_OP_NO_RENEGOTIATION, 0u);
    EXPECT_EQ(SSL_CTX_get_min_proto_version(ctx->native_handle()), TLS1_2_VERSION);
    EXPECT_NE(SSL_CTX_get_mode(ctx->native_handle()) & SSL_MODE_RELEASE_BUFFERS, 0u);
  }
  EXPECT_EQ(SSL_CTX_get_verify_mode(client_->native_handle()) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);
}

TEST_F(TlsContextTest, BadFilesAreConfigErrors) {
  test::TempDir other;
  ASSERT_TRUE(ensure_server_certificate(other.path() / "s.crt", other.path() / "s.key"));
  auto mismatch = make_server_context(cert(), other.path() / "s.key");
  ASSERT_FALSE(mismatch.has_value());
  EXPECT_EQ(mismatch.error().code, Errc::config_error);

  auto missing = make_server_context(dir_.path() / "none.crt", key());
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::config_error);
  EXPECT_NE(missing.error().message.find("none.crt"), std::string::npos);

  auto no_ca = make_client_context(dir_.path() / "none.pem");
  ASSERT_FALSE(no_ca.has_value());
  EXPECT_EQ(no_ca.error().code, Errc::config_error);
}

TEST_F(TlsContextTest, EmptyHostIsRejected) {
  net::io_context ioc;
  ssl::stream<tcp::socket> stream(ioc, *client_);
  EXPECT_FALSE(set_server_identity(stream.native_handle(), "").has_value());
}

}  // namespace
}  // namespace iop::certs
