// SMTP submission end to end (issue #11): the built binary (`serve`) between real senders
// (Python's smtplib, swaks, msmtp, curl) and Dovecot's submission service, which checks XOAUTH2
// through the test token endpoint and relays into an aiosmtpd sink. Everything on loopback.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "storage/audit_log.hpp"
#include "storage/credentials_store.hpp"
#include "tests/support/cli_env.hpp"
#include "tests/support/dovecot_server.hpp"
#include "tests/support/redis_server.hpp"
#include "tests/support/smtp_sink.hpp"
#include "tests/support/token_endpoint_peer.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string alice = "alice@example.com";  // default profile: upstream STARTTLS
const std::string carol = "carol@example.com";  // provider "implicitsmtp": upstream implicit TLS
const std::string dave = "dave@example.com";    // provider "downsmtp": nothing listens there
const std::string local_pass = "local-pass-1";

std::string script(const char* name) {
  return std::string(IOP_SOURCE_DIR) + "/tests/peers/" + name;
}

struct Env {
  TempDir dir;
  TokenEndpointPeer peer;
  RedisServer redis;
  SmtpSink sink;
  std::unique_ptr<DovecotServer> dovecot;
  std::filesystem::path config;
  int submission_port = 0;
  int submissions_port = 0;
  Process proxy;

  Env() {
    dovecot = std::make_unique<DovecotServer>(peer.introspect_url(), "pw@example.com", "pw",
                                              DovecotOptions{sink.port()});
    submission_port = free_port();
    submissions_port = free_port();
    ServeConfig c;
    c.tls_port = free_port();
    c.server_extra = "listen_submission = \"127.0.0.1:" + std::to_string(submission_port) +
                     "\"\nlisten_submissions = \"127.0.0.1:" + std::to_string(submissions_port) +
                     "\"\npreauth_timeout = \"10s\"\nauth_failure_delay = \"50ms\"\n"
                     "shutdown_grace = \"2s\"\n";
    c.upstream_port = dovecot->imaps_port();
    c.upstream_ca_file = dovecot->ca_file();
    c.upstream_extra =
        "smtp_host = \"localhost\"\nsmtp_port = " + std::to_string(dovecot->submission_port()) +
        "\nsmtp_tls = \"starttls\"\ntimeout = \"10s\"\n";
    c.token_url = peer.token_url();
    c.redis_url = redis.url();
    c.log_level = "debug";
    c.more = "[providers.implicitsmtp]\nsmtp_host = \"localhost\"\nsmtp_port = " +
             std::to_string(dovecot->submissions_port()) +
             "\nsmtp_tls = \"implicit\"\n[providers.downsmtp]\nsmtp_host = \"127.0.0.1\"\n"
             "smtp_port = " +
             std::to_string(free_port()) + "\n";
    config = write_serve_config(dir.path(), c);
    add_account(alice, {});
    add_account(carol, {"--provider", "implicitsmtp"});
    add_account(dave, {"--provider", "downsmtp"});
    proxy = start_serve(config, dir.path() / "proxy.log");
    if (!poll_until([this] { return accepts_connections(submissions_port); }, 30s) ||
        !send(alice, local_pass, {"--count", "0"}).value("ok", false)) {
      throw std::runtime_error("the proxy did not start: " + proxy_log());
    }
  }

  void add_account(const std::string& email, std::vector<std::string> extra) {
    const auto refresh = peer.add_account(email);
    std::vector<std::string> args{"account", "add", email, "--refresh-token-stdin",
                                  "--local-password-stdin"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_cli(config, args, refresh + "\n" + local_pass + "\n");
    if (r.exit_code != 0) {
      throw std::runtime_error("account add failed: " + r.err);
    }
  }

  // Marks the stored access token long expired and empties Redis. The proxy's memory may still
  // hold a token of an account it has used: expire only accounts it has not.
  void expire(const std::string& email) {
    auto s = store();
    auto row = s->get(email).value();
    row.token_expiry = 1;
    if (!s->upsert_account(row)) {
      throw std::runtime_error("cannot expire the token");
    }
    redis.flushall();
  }

  std::unique_ptr<storage::CredentialsStore> store() { return open_cli_store(dir.path()).value(); }

  std::string proxy_log() const { return read_file(dir.path() / "proxy.log"); }
  std::filesystem::path proxy_ca() const { return dir.path() / "certs/ca.crt"; }

  // tests/peers/smtp_send.py against the implicit-TLS listener (or, with "--starttls" in
  // `extra`, the plain one).
  json send(const std::string& user, const std::string& password, std::vector<std::string> extra) {
    const bool starttls = std::find(extra.begin(), extra.end(), "--starttls") != extra.end();
    std::vector<std::string> argv{
        "/usr/bin/python3", script("smtp_send.py"),
        "--port",           std::to_string(starttls ? submission_port : submissions_port),
        "--cafile",         proxy_ca().string(),
        "--user",           user,
        "--password",       password};
    argv.insert(argv.end(), extra.begin(), extra.end());
    const auto r = run_command(argv, "", 300s);
    try {
      return json::parse(r.out);
    } catch (const std::exception&) {
      return json{{"ok", false}, {"error", "sender output: " + r.out + r.err}};
    }
  }

  std::vector<storage::ConnectionRecord> audit_rows() {
    auto log = storage::AuditLog::open_for_reading(dir.path() / "data/credentials.db").value();
    return log->query({}).value();
  }
};

Env* env = nullptr;

class SubmissionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { env = new Env(); }
  static void TearDownTestSuite() {
    delete env;
    env = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) {
      const auto log = env->proxy_log();
      std::cerr << "---- proxy log (tail) ----\n"
                << log.substr(log.size() > 6000 ? log.size() - 6000 : 0) << "\n---- end ----\n";
      const auto dovecot = env->dovecot->log();
      std::cerr << "---- dovecot log (tail) ----\n"
                << dovecot.substr(dovecot.size() > 3000 ? dovecot.size() - 3000 : 0)
                << "\n---- end ----\n";
    }
  }

  // The messages the sink holds after the ones there before `before`, waiting for `count`.
  static std::vector<std::string> new_messages(std::size_t before, std::size_t count) {
    EXPECT_TRUE(env->sink.wait_for_messages(before + count))
        << "sink has " << env->sink.messages().size();
    auto all = env->sink.messages();
    return {all.begin() + static_cast<std::ptrdiff_t>(std::min(before, all.size())), all.end()};
  }
};

TEST_F(SubmissionTest, SmtplibOverImplicitTlsDeliversTheBodyByteForByte) {
  // Lines that need dot-stuffing, 8-bit bytes, a long line and a final line without CRLF...
  // as smtplib normalizes line ends, the body is given in CRLF form.
  std::string body = ".leading dot\r\n..two dots\r\n\xc3\xa9t\xc3\xa9 8bit\r\n" +
                     std::string(900, 'x') + "\r\nlast line\r\n";
  const auto file = env->dir.path() / "body.txt";
  std::ofstream(file, std::ios::binary) << body;
  const auto before = env->sink.messages().size();
  const auto r = env->send(alice, local_pass, {"--body-file", file.string()});
  ASSERT_TRUE(r.value("ok", false)) << r.dump();
  const auto got = new_messages(before, 1);
  ASSERT_EQ(got.size(), 1u);
  // The sink stores with LF line ends (Python's mailbox module).
  std::string expected;
  for (char c : body) {
    if (c != '\r') expected += c;
  }
  EXPECT_EQ(message_body(got[0]), expected);
  EXPECT_NE(got[0].find("X-MailFrom: sender@example.com"), std::string::npos) << got[0];
}

TEST_F(SubmissionTest, StartTlsPortAndAuthLoginWithAnImplicitTlsUpstream) {
  const auto before = env->sink.messages().size();
  const auto r = env->send(carol, local_pass, {"--starttls", "--auth", "login"});
  ASSERT_TRUE(r.value("ok", false)) << r.dump();
  EXPECT_EQ(new_messages(before, 1).size(), 1u);
}

TEST_F(SubmissionTest, SwaksMsmtpAndCurlSend) {
  const auto before = env->sink.messages().size();
  const auto message = env->dir.path() / "msg.eml";
  std::ofstream(message, std::ios::binary)
      << "From: alice@example.com\r\nTo: rcpt@example.net\r\nSubject: real senders\r\n\r\n"
         "sent by a real client\r\n";
  const std::string port = std::to_string(env->submission_port);
  const auto swaks =
      run_command({"swaks", "--server", "127.0.0.1", "--port", port, "--tls", "--auth", "LOGIN",
                   "--auth-user", alice, "--auth-password", local_pass, "--from", alice, "--to",
                   "rcpt@example.net", "--data", "Subject: swaks\r\n\r\nsent by swaks\r\n"},
                  "", 60s);
  EXPECT_EQ(swaks.exit_code, 0) << swaks.out << swaks.err;
  const auto msmtp =
      run_command({"msmtp", "--host=127.0.0.1", "--port=" + port, "--tls=on", "--tls-starttls=on",
                   "--tls-trust-file=" + env->proxy_ca().string(), "--tls-host-override=localhost",
                   "--auth=plain", "--user=" + alice, "--passwordeval=echo " + local_pass,
                   "--from=" + alice, "rcpt@example.net"},
                  read_file(message), 60s);
  EXPECT_EQ(msmtp.exit_code, 0) << msmtp.out << msmtp.err;
  const auto curl =
      run_command({"curl", "-sS", "--url", "smtp://localhost:" + port, "--ssl-reqd", "--cacert",
                   env->proxy_ca().string(), "--user", alice + ":" + local_pass, "--mail-from",
                   alice, "--mail-rcpt", "rcpt@example.net", "--upload-file", message.string()},
                  "", 60s);
  EXPECT_EQ(curl.exit_code, 0) << curl.out << curl.err;
  const auto got = new_messages(before, 3);
  ASSERT_EQ(got.size(), 3u);
  std::string bodies;
  for (const auto& m : got) bodies += message_body(m);
  EXPECT_NE(bodies.find("sent by swaks"), std::string::npos) << bodies;
  EXPECT_NE(bodies.find("sent by a real client"), std::string::npos) << bodies;
}

TEST_F(SubmissionTest, PlainPortRefusesAuthBeforeStartTls) {
  const auto transcript = run_command({"/usr/bin/python3", "-c",
                                       "import smtplib,sys\n"
                                       "s=smtplib.SMTP('127.0.0.1',int(sys.argv[1]),timeout=20)\n"
                                       "print(s.ehlo('x')[1].decode())\n"
                                       "print(s.docmd('AUTH','PLAIN AGFAAGI=')[0])\n",
                                       std::to_string(env->submission_port)},
                                      "", 60s);
  EXPECT_NE(transcript.out.find("STARTTLS"), std::string::npos) << transcript.out;
  EXPECT_EQ(transcript.out.find("AUTH PLAIN"), std::string::npos) << transcript.out;
  EXPECT_NE(transcript.out.find("\n530\n"), std::string::npos) << transcript.out;
}

TEST_F(SubmissionTest, AMessageAndQuitSentWithTheHangUpGetTheirReplies) {
  // The end of data, QUIT and the end of the client's sending in one go (a script, a pipe):
  // the upstream's 250 and 221 still reach the client, and the message is counted.
  const auto transcript = run_command(
      {"/usr/bin/python3", "-c",
       "import base64,socket,ssl,sys\n"
       "ctx=ssl.create_default_context(cafile=sys.argv[2])\n"
       "s=ctx.wrap_socket(socket.create_connection(('127.0.0.1',int(sys.argv[1]))),"
       "server_hostname='localhost')\n"
       "f=s.makefile('rb')\n"
       "def reply():\n"
       "  while True:\n"
       "    line=f.readline().decode()\n"
       "    if line[3:4]!='-': return line\n"
       "reply()\n"
       "s.sendall(b'EHLO x\\r\\n'); reply()\n"
       "auth=base64.b64encode(b'\\0'+sys.argv[3].encode()+b'\\0'+sys.argv[4].encode())\n"
       "s.sendall(b'AUTH PLAIN '+auth+b'\\r\\n'); print(reply().strip())\n"
       "s.sendall(b'MAIL FROM:<sender@example.com>\\r\\nRCPT TO:<rcpt@example.net>\\r\\n"
       "DATA\\r\\n')\n"
       "reply(); reply(); print(reply().strip())\n"
       "s.sendall(b'Subject: half-close\\r\\n\\r\\nbody\\r\\n.\\r\\nQUIT\\r\\n')\n"
       // The end of the client's sending, TLS-style: close_notify (RFC 8446 §6.1), without
       // waiting for the server's.
       "s.setblocking(False)\n"
       "try: s.unwrap()\n"
       "except (ssl.SSLWantReadError, ssl.SSLWantWriteError): pass\n"
       "s.setblocking(True); s.settimeout(10)\n"
       "out=b''\n"
       "while True:\n"
       "  try: d=s.recv(4096)\n"
       "  except (ssl.SSLError, OSError): break\n"
       "  if not d: break\n"
       "  out+=d\n"
       "print(out.decode())\n",
       std::to_string(env->submissions_port), env->proxy_ca().string(), alice, local_pass},
      "", 60s);
  EXPECT_NE(transcript.out.find("235"), std::string::npos) << transcript.out << transcript.err;
  EXPECT_NE(transcript.out.find("354"), std::string::npos) << transcript.out;
  EXPECT_NE(transcript.out.find("\n250"), std::string::npos) << transcript.out;
  EXPECT_NE(transcript.out.find("221"), std::string::npos) << transcript.out;
  EXPECT_TRUE(wait_until(
      [&] {
        for (const auto& row : env->audit_rows()) {
          // Which end the proxy saw first (the client's, or the upstream's after its 221) is a
          // race: the reason may name either.
          if (row.account == alice && row.messages == 1 &&
              row.close_reason.find(" closed") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      10s, "the half-closed session's row, its message counted"));
}

TEST_F(SubmissionTest, AuthForAnotherIdentityIsAFailedLoginInTheRow) {
  // AUTH PLAIN bob\0alice\0pw: alice acting as bob, refused before any password check; then a
  // hang-up without QUIT.
  const auto transcript = run_command(
      {"/usr/bin/python3", "-c",
       "import base64,smtplib,ssl,sys\n"
       "ctx=ssl.create_default_context(cafile=sys.argv[2])\n"
       "s=smtplib.SMTP_SSL('localhost',int(sys.argv[1]),context=ctx,timeout=20)\n"
       "s.ehlo('x')\n"
       "m=base64.b64encode(b'bob@example.com\\0'+sys.argv[3].encode()+b'\\0pw').decode()\n"
       "print(s.docmd('AUTH','PLAIN '+m)[0])\n"
       "s.close()\n",
       std::to_string(env->submissions_port), env->proxy_ca().string(), alice},
      "", 60s);
  EXPECT_NE(transcript.out.find("535"), std::string::npos) << transcript.out << transcript.err;
  EXPECT_TRUE(wait_until(
      [&] {
        for (const auto& row : env->audit_rows()) {
          if (row.outcome == storage::ConnectionOutcome::auth_failed &&
              row.close_reason == "authorization identity refused; client closed before AUTH") {
            return true;
          }
        }
        return false;
      },
      10s, "the refused session's row"));
}

TEST_F(SubmissionTest, WrongLocalPasswordIs535) {
  const auto r = env->send(alice, "wrong password", {});
  EXPECT_FALSE(r.value("ok", true));
  EXPECT_EQ(r.value("code", 0), 535) << r.dump();
  // smtplib hangs up without QUIT: the row keeps why the AUTH failed.
  EXPECT_TRUE(wait_until(
      [&] {
        for (const auto& row : env->audit_rows()) {
          if (row.account == alice && row.outcome == storage::ConnectionOutcome::auth_failed &&
              row.close_reason == "local authentication failed; client closed before AUTH") {
            return true;
          }
        }
        return false;
      },
      10s, "the refused session's connection-log row"));
}

TEST_F(SubmissionTest, ExpiredTokenIsRefreshedAndTheMessageSent) {
  // A new account (no token of it in the proxy's memory) whose stored token has expired.
  const std::string gina = "gina@example.com";
  env->add_account(gina, {});
  env->expire(gina);
  const auto refreshes = env->peer.stats()["per_account"].value(gina, 0);
  const auto r = env->send(gina, local_pass, {});
  ASSERT_TRUE(r.value("ok", false)) << r.dump();
  EXPECT_EQ(env->peer.stats()["per_account"].value(gina, 0), refreshes + 1);
}

TEST_F(SubmissionTest, HundredSimultaneousSubmissionsOfAnExpiredAccountRefreshOnce) {
  const std::string hank = "hank@example.com";
  env->add_account(hank, {"--provider", "implicitsmtp"});
  env->expire(hank);
  const auto refreshes = env->peer.stats()["per_account"].value(hank, 0);
  const auto before = env->sink.messages().size();
  const auto r = env->send(hank, local_pass, {"--concurrent", "100"});
  ASSERT_TRUE(r.value("ok", false)) << r.dump().substr(0, 2000);
  EXPECT_EQ(env->peer.stats()["per_account"].value(hank, 0), refreshes + 1);
  EXPECT_EQ(new_messages(before, 100).size(), 100u);
}

TEST_F(SubmissionTest, ThirtyMegabyteMessageArrivesWhole) {
  const auto before = env->sink.messages().size();
  const auto r = env->send(alice, local_pass, {"--size", std::to_string(30 * 1000 * 1000)});
  ASSERT_TRUE(r.value("ok", false)) << r.dump();
  const auto got = new_messages(before, 1);
  ASSERT_EQ(got.size(), 1u);
  // Each CRLF of the sent body is one LF in the sink's file.
  const auto body = message_body(got[0]);
  EXPECT_GE(body.size(), 29'000'000u);
  EXPECT_EQ(body.rfind("line 0 of test message 0\n", 0), 0u);
}

TEST_F(SubmissionTest, PipelinedCommandsAndGarbageAroundAuth) {
  const auto before = env->sink.messages().size();
  const auto raw = env->dir.path() / "raw.txt";
  // Garbage before EHLO and AUTH; AUTH with the whole transaction pipelined behind it (RFC
  // 2920); garbage after AUTH reaches the upstream, which refuses it, and the session goes on.
  std::ofstream(raw, std::ios::binary)
      << "\x01\x02 garbage\r\nEHLO raw.test\r\nNOT A COMMAND\r\nAUTH PLAIN {auth}\r\n"
         "MAIL FROM:<alice@example.com>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n"
         "Subject: pipelined\r\n\r\npipelined body\r\n.\r\nMORE GARBAGE\r\nQUIT\r\n";
  const auto r = env->send(alice, local_pass, {"--raw", raw.string()});
  const std::string t = r.value("transcript", "");
  EXPECT_NE(t.find("500 5.5.2 Command not recognized"), std::string::npos) << t;
  EXPECT_NE(t.find("235 2.7.0"), std::string::npos) << t;
  EXPECT_NE(t.find("354"), std::string::npos) << t;
  EXPECT_NE(t.find("221"), std::string::npos) << t;
  const auto got = new_messages(before, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(message_body(got[0]), "pipelined body\n");
}

TEST_F(SubmissionTest, BdatChunksAreRelayedAndCounted) {
  // RFC 3030 CHUNKING, as the upstream offers it: pipelined BDAT chunks, the last one LAST.
  const auto before = env->sink.messages().size();
  const auto raw = env->dir.path() / "bdat.txt";
  const std::string chunk1 = "Subject: chunked\r\n\r\nfirst part, ";
  const std::string chunk2 = "second part\r\n";
  std::ofstream(raw, std::ios::binary)
      << "EHLO raw.test\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<alice@example.com>\r\n"
         "RCPT TO:<rcpt@example.net>\r\nBDAT "
      << chunk1.size() << "\r\n"
      << chunk1 << "BDAT " << chunk2.size() << " LAST\r\n"
      << chunk2 << "QUIT\r\n";
  const auto r = env->send(alice, local_pass, {"--raw", raw.string()});
  const std::string t = r.value("transcript", "");
  EXPECT_NE(t.find("CHUNKING"), std::string::npos) << t;  // advertised: Dovecot offers it
  EXPECT_NE(t.find("221"), std::string::npos) << t;
  const auto got = new_messages(before, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(message_body(got[0]), "first part, second part\n");
}

TEST_F(SubmissionTest, UpstreamDownIs421) {
  const auto r = env->send(dave, local_pass, {});
  EXPECT_FALSE(r.value("ok", true));
  EXPECT_EQ(r.value("code", 0), 421) << r.dump();
  EXPECT_NE(r.value("error", "").find("unavailable"), std::string::npos) << r.dump();
}

TEST_F(SubmissionTest, EverySessionIsInTheConnectionLog) {
  // One session, two messages: the row counts both.
  ASSERT_TRUE(env->send(alice, local_pass, {"--count", "2"}).value("ok", false));
  const std::string listener = "submissions:127.0.0.1:" + std::to_string(env->submissions_port);
  // Rows are written when a connection ends, asynchronously.
  EXPECT_TRUE(wait_until(
      [&] {
        for (const auto& row : env->audit_rows()) {
          if (row.listener == listener && row.account == alice &&
              row.outcome == storage::ConnectionOutcome::ok && row.bytes_client_to_upstream > 0 &&
              row.messages == 2) {
            return true;
          }
        }
        return false;
      },
      10s, "the submission's connection-log row"));
}

TEST_F(SubmissionTest, DoctorChecksEachSmtpUpstreamAndTheListeners) {
  const auto r = run_cli(env->config, {"doctor"});
  EXPECT_EQ(r.exit_code, 1) << r.out;  // the downsmtp provider's server is not there
  const std::string starttls =
      "smtp upstream localhost:" + std::to_string(env->dovecot->submission_port());
  const std::string implicit =
      "smtp upstream localhost:" + std::to_string(env->dovecot->submissions_port());
  for (const auto& name : {starttls, implicit}) {
    const auto at = r.out.find(name);
    ASSERT_NE(at, std::string::npos) << r.out;
    const auto line = r.out.substr(at, r.out.find('\n', at) - at);
    EXPECT_NE(line.find("offers AUTH XOAUTH2"), std::string::npos) << line;
  }
  EXPECT_NE(r.out.find("starttls TLS certificate verified"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("implicit TLS certificate verified"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("smtp upstream 127.0.0.1:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("in use by a running imap-oauth2-proxy (listen_submissions)"),
            std::string::npos)
      << r.out;
}

TEST_F(SubmissionTest, TokenRefusedUpstreamIsRefreshedOnceAndTheAuthRetried) {
  // The access token the proxy holds (memory and Redis) is revoked at the endpoint: Dovecot
  // refuses it, the proxy refreshes once and the message goes through.
  ASSERT_TRUE(env->send(alice, local_pass, {}).value("ok", false));
  env->peer.revoke_access_tokens(alice);
  const auto refreshes = env->peer.stats()["per_account"].value(alice, 0);
  const auto before = env->sink.messages().size();
  const auto r = env->send(alice, local_pass, {});
  ASSERT_TRUE(r.value("ok", false)) << r.dump();
  EXPECT_EQ(env->peer.stats()["per_account"].value(alice, 0), refreshes + 1);
  EXPECT_EQ(new_messages(before, 1).size(), 1u);
}

TEST_F(SubmissionTest, RevokedRefreshTokenIs535WithTheReauthHint) {
  // A new account, never used, so no access token of it is cached in the proxy's memory.
  const std::string erin = "erin@example.com";
  env->add_account(erin, {});
  env->expire(erin);
  env->peer.revoke(erin);
  const auto r = env->send(erin, local_pass, {});
  EXPECT_EQ(r.value("code", 0), 535) << r.dump();
  EXPECT_NE(r.value("error", "").find("imap-oauth2-proxy account reauth erin@example.com"),
            std::string::npos)
      << r.dump();
  EXPECT_EQ(env->store()->get(erin).value().status, storage::AccountStatus::needs_reauth);
}

// A plain TCP connection to 127.0.0.1:`port` that reads the first line (10 s bound).
class PlainSmtp {
 public:
  explicit PlainSmtp(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect failed");
    }
  }
  ~PlainSmtp() { ::close(fd_); }
  std::string first_line() {
    std::string out;
    char c = 0;
    while (out.find("\r\n") == std::string::npos && ::recv(fd_, &c, 1, 0) == 1) {
      out += c;
    }
    return out;
  }

 private:
  int fd_;
};

TEST(SubmissionLimits, OverMaxConnectionsTheClientGets421) {
  // No peers needed: nobody authenticates.
  TempDir dir;
  const int port = free_port();
  ServeConfig c;
  c.tls_port = free_port();
  c.server_extra =
      "listen_submission = \"127.0.0.1:" + std::to_string(port) + "\"\nmax_connections = 1\n";
  c.token_url = "http://127.0.0.1:1/token";
  c.log_level = "info";
  const auto config = write_serve_config(dir.path(), c);
  auto proxy = start_serve(config, dir.path() / "proxy.log");
  // The log line, not a probe connection: a probe would hold the one slot itself.
  ASSERT_TRUE(wait_until(
      [&] {
        return read_file(dir.path() / "proxy.log").find("listening on submission:") !=
               std::string::npos;
      },
      30s, "the submission listener"))
      << read_file(dir.path() / "proxy.log");
  PlainSmtp first(port);
  EXPECT_EQ(first.first_line().rfind("220 localhost ESMTP", 0), 0u);
  PlainSmtp second(port);
  EXPECT_EQ(second.first_line(), "421 4.7.0 Too many connections, try again later\r\n");
}

}  // namespace
}  // namespace iop::test
