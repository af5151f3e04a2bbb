#include "tests/support/dovecot_server.hpp"

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "certs/local_cert.hpp"
#include "tests/support/wait_until.hpp"

namespace iop::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

void write_file(const fs::path& path, const std::string& text, fs::perms perms) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    throw std::runtime_error("cannot write " + path.string());
  }
  fs::permissions(path, perms);
}

// A connected TCP socket to 127.0.0.1:`port`, or -1. Bounded by `timeout`.
int connect_loopback(int port, std::chrono::milliseconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      ::close(fd);
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1 ||
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ::close(fd);
      return -1;
    }
  }
  return fd;
}

// Reads from `fd` until a CRLF or `timeout`; returns what arrived.
std::string read_line(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (line.find("\r\n") == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) {
      break;
    }
    char buf[512];
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      break;
    }
    line.append(buf, static_cast<std::size_t>(n));
  }
  return line;
}

// Processes of process group `pgid` that still run (zombies hold no sockets and are not
// counted: a container's PID 1 may never reap them).
int live_members(pid_t pgid) {
  int count = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    const std::string stat = read_file(entry.path() / "stat");
    // pid (comm) state ppid pgrp ...: comm may hold spaces, so parse after the last ')'.
    const auto close = stat.rfind(')');
    if (close == std::string::npos) {
      continue;
    }
    char state = 0;
    int ppid = 0;
    int pgrp = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 &&
        pgrp == pgid && state != 'Z' && state != 'X') {
      ++count;
    }
  }
  return count;
}

// One field of a passwd-file line must not contain the separators.
void check_passwd_field(const std::string& value, const char* what) {
  if (value.empty() || value.find_first_of(":\r\n") != std::string::npos) {
    throw std::invalid_argument(std::string("DovecotServer: unusable ") + what);
  }
}

struct Identity {
  std::string internal_user;   // default_internal_user
  std::string internal_group;  // default_internal_group
  std::string login_user;      // default_login_user
  uid_t mail_uid = 0;
  gid_t mail_gid = 0;
  bool root = false;
};

Identity identity() {
  Identity id;
  id.root = ::geteuid() == 0;
  const passwd* pw = id.root ? ::getpwnam("nobody") : ::getpwuid(::geteuid());
  if (pw == nullptr) {
    throw std::runtime_error(id.root ? "DovecotServer: no user 'nobody' to own the test mail"
                                     : "DovecotServer: cannot look up the current user");
  }
  id.mail_uid = pw->pw_uid;
  id.mail_gid = pw->pw_gid;
  if (id.root) {
    if (::getpwnam("dovecot") == nullptr || ::getpwnam("dovenull") == nullptr) {
      throw std::runtime_error(
          "DovecotServer: the system users 'dovecot' and 'dovenull' are missing; install "
          "dovecot-imapd (scripts/install-deps.sh)");
    }
    id.internal_user = "dovecot";
    id.internal_group = "dovecot";
    id.login_user = "dovenull";
  } else {
    const group* gr = ::getgrgid(pw->pw_gid);
    if (gr == nullptr) {
      throw std::runtime_error("DovecotServer: cannot look up the current group");
    }
    id.internal_user = pw->pw_name;
    id.internal_group = gr->gr_name;
    id.login_user = pw->pw_name;
  }
  return id;
}

}  // namespace

DovecotServer::DovecotServer(std::string introspect_url, std::string password_user,
                             std::string password, DovecotOptions options)
    : introspect_url_(std::move(introspect_url)),
      password_user_(std::move(password_user)),
      password_(std::move(password)),
      options_(options) {
  check_passwd_field(password_user_, "password user name");
  check_passwd_field(password_, "password");
  if (run_command({"sh", "-c", "command -v dovecot"}).exit_code != 0) {
    throw std::runtime_error(
        "DovecotServer: no dovecot binary; install dovecot-imapd (scripts/install-deps.sh)");
  }
  const Identity id = identity();
  // mkdtemp made the folder 0700; the mail user must be able to walk through it to its mail.
  fs::permissions(dir_.path(),
                  fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  fs::create_directories(dir_.path() / "run");
  fs::create_directories(dir_.path() / "state");
  fs::create_directories(dir_.path() / "tls");
  fs::create_directories(mail_root());
  if (id.root && ::chown(mail_root().c_str(), id.mail_uid, id.mail_gid) != 0) {
    throw std::runtime_error("DovecotServer: cannot chown the mail folder: " +
                             std::string(std::strerror(errno)));
  }
  const auto made = certs::ensure_server_certificate(dir_.path() / "tls" / "server.crt",
                                                     dir_.path() / "tls" / "server.key");
  if (!made) {
    throw std::runtime_error("DovecotServer: cannot make a test certificate: " +
                             made.error().message);
  }

  // free_port() can race with another process taking the port before Dovecot binds it; a few
  // fresh ports make that a non-event.
  std::string last_error;
  for (int attempt = 0; attempt < 3; ++attempt) {
    imap_port_ = free_port();
    imaps_port_ = free_port();
    if (imaps_port_ == imap_port_) {
      continue;
    }
    if (options_.submission_relay_port != 0) {
      submission_port_ = free_port();
      submissions_port_ = free_port();
      if (submission_port_ == submissions_port_ || submission_port_ == imap_port_ ||
          submission_port_ == imaps_port_ || submissions_port_ == imap_port_ ||
          submissions_port_ == imaps_port_) {
        continue;
      }
    }
    write_config();
    try {
      start();
      return;
    } catch (const std::runtime_error& e) {
      last_error = e.what();
      stop();
    }
  }
  throw std::runtime_error(last_error);
}

DovecotServer::~DovecotServer() { stop(); }

fs::path DovecotServer::ca_file() const {
  return certs::ca_certificate_path(dir_.path() / "tls" / "server.crt");
}

fs::path DovecotServer::mail_root() const { return dir_.path() / "mail"; }

void DovecotServer::write_config() {
  const Identity id = identity();
  const fs::path d = dir_.path();
  write_file(d / "oauth2.conf.ext",
             fmt::format("introspection_mode = post\n"
                         "introspection_url = {}\n"
                         "username_attribute = email\n"
                         "active_attribute = active\n"
                         "active_value = true\n"
                         "max_parallel_connections = 32\n",
                         introspect_url_),
             fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                 fs::perms::others_read);
  write_file(d / "users", fmt::format("{}:{{PLAIN}}{}::::::\n", password_user_, password_),
             fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                 fs::perms::others_read);

  // Why each limit (Dovecot 2.3 defaults in brackets):
  // - imap: one process per session is Dovecot's recommended model (client_limit = 1; mail
  //   processes block on disk I/O), so process_limit [100] is the session ceiling: 4096.
  // - imap-login: high-performance mode (service_count = 0 [1]): a few long-lived processes,
  //   each handling up to client_limit connections. After login over TLS, imap-login keeps
  //   proxying the session's TLS, so its connections stay open as long as the sessions:
  //   2 processes x 5000 covers 2000+ idle TLS sessions; vsz_limit raised for that.
  // - auth, anvil and stats [1000 clients each] get a connection from every imap/login
  //   process: raised so 2000+ imap processes do not hit "client_limit reached".
  // - mail_max_userip_connections [10] caps sessions per user and IP: 200 simultaneous logins
  //   of one account all come from 127.0.0.1.
  // - auth_failure_delay [2s] would slow every negative test.
  const std::string chroot = id.root ? "" : "  chroot =\n";
  // High-performance (default here) or Dovecot's own default, high-security mode: one login
  // process per connection, which after login proxies that one session's TLS and nothing else.
  const std::string login_mode =
      options_.high_performance_login
          ? "  service_count = 0\n  process_min_avail = 2\n  process_limit = 8\n"
            "  client_limit = 5000\n"
          : "  service_count = 1\n  process_min_avail = 0\n  process_limit = 4096\n";
  const std::string conf = fmt::format(
      R"(# Written by tests/support/dovecot_server.cpp for one test run.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = 1
first_valid_gid = 1

ssl = yes
ssl_cert = <{d}/tls/server.crt
ssl_key = <{d}/tls/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes

auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mail_max_userip_connections = 10000

passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u allow_all_users=yes
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
{login_mode}  vsz_limit = 1G
{chroot}}}
service imap {{
  process_limit = 4096
  client_limit = 1
}}
service auth {{
  client_limit = 10000
}}
service anvil {{
  client_limit = 10000
}}
service stats {{
  client_limit = 10000
}}
)",
      fmt::arg("d", d.string()), fmt::arg("internal", id.internal_user),
      fmt::arg("internal_group", id.internal_group), fmt::arg("login", id.login_user),
      fmt::arg("uid", id.mail_uid), fmt::arg("gid", id.mail_gid),
      fmt::arg("mail", mail_root().string()), fmt::arg("imap", imap_port_),
      fmt::arg("imaps", imaps_port_), fmt::arg("chroot", chroot),
      fmt::arg("login_mode", login_mode));
  // Submission (TESTING.md "SMTP submission peer"): the same passdbs; every accepted message is
  // relayed to the sink; mail_max_userip_connections applies per protocol, so it is raised
  // here as well (every proxied submission comes from 127.0.0.1).
  std::string submission;
  if (options_.submission_relay_port != 0) {
    submission = fmt::format(
        R"(
protocols = $protocols submission
hostname = localhost
submission_relay_host = 127.0.0.1
submission_relay_port = {relay}
submission_relay_trusted = yes
submission_max_mail_size = 64M
protocol submission {{
  mail_max_userip_connections = 10000
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {submission}
  }}
  inet_listener submissions {{
    address = 127.0.0.1
    port = {submissions}
    ssl = yes
  }}
{chroot}}}
service submission {{
  process_limit = 1024
}}
)",
        fmt::arg("relay", options_.submission_relay_port), fmt::arg("submission", submission_port_),
        fmt::arg("submissions", submissions_port_), fmt::arg("chroot", chroot));
  }
  write_file(d / "dovecot.conf", conf + submission,
             fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                 fs::perms::others_read);
}

bool DovecotServer::running() { return process_.running(); }

void DovecotServer::start() {
  if (process_.running()) {
    return;
  }
  process_ = Process::start({"dovecot", "-F", "-c", (dir_.path() / "dovecot.conf").string()},
                            dir_.path() / "dovecot.out");
  wait_until_ready(20s);
}

void DovecotServer::stop() {
  const pid_t group = process_.pid();
  if (group <= 0) {
    return;
  }
  // SIGKILL to the whole process group (Process::start made the master a group leader and its
  // children stay in the group): immediate, where a SIGTERM-ed master takes about a second to
  // wind down. Test mail is written synchronously, so nothing of value is lost.
  ::kill(-group, SIGKILL);
  process_.kill_and_wait();
  // Children still running would keep the listening sockets: wait until they are gone.
  poll_until(
      [group] {
        if (live_members(group) == 0) {
          return true;
        }
        ::kill(-group, SIGKILL);
        return false;
      },
      10s);
}

void DovecotServer::wait_until_ready(std::chrono::milliseconds limit) {
  std::string last;
  const auto started = wait_for_start(
      process_,
      [&] {
        const int plain = connect_loopback(imap_port_, 500ms);
        if (plain < 0) {
          last = "imap port refused";
          return false;
        }
        last = read_line(plain, 2s);
        ::close(plain);
        if (last.rfind("* OK", 0) != 0) {
          return false;
        }
        const int tls = connect_loopback(imaps_port_, 500ms);
        if (tls < 0) {
          last = "imaps port refused";
          return false;
        }
        ::close(tls);
        if (submission_port_ == 0) {
          return true;
        }
        const int smtp = connect_loopback(submission_port_, 500ms);
        if (smtp < 0) {
          last = "submission port refused";
          return false;
        }
        last = read_line(smtp, 2s);
        ::close(smtp);
        return last.rfind("220", 0) == 0;
      },
      limit);
  if (started == StartUp::exited) {
    throw std::runtime_error("dovecot exited at startup; its log:\n" + log_tail(4000));
  }
  if (started == StartUp::timed_out) {
    throw std::runtime_error(
        fmt::format("dovecot on ports {}/{} did not become ready in time (last: {}); its log:\n{}",
                    imap_port_, imaps_port_, last, log_tail(4000)));
  }
}

void DovecotServer::deliver(const std::string& user, const std::string& rfc822_message) {
  const auto r = run_command(
      {"doveadm", "-c", (dir_.path() / "dovecot.conf").string(), "save", "-u", user, "-m", "INBOX"},
      rfc822_message, 30s);
  if (r.exit_code != 0) {
    throw std::runtime_error(
        fmt::format("doveadm save for {} failed ({}): {}{}", user, r.exit_code, r.out, r.err));
  }
}

std::size_t DovecotServer::kick(const std::string& user) {
  const auto r = run_command(
      {"doveadm", "-c", (dir_.path() / "dovecot.conf").string(), "kick", user}, "", 30s);
  // doveadm kick exits 0 after kicking and 68 (EX_NOUSER) when the user has no session.
  if (r.exit_code != 0 && r.exit_code != 68) {
    throw std::runtime_error(
        fmt::format("doveadm kick {} failed ({}): {}{}", user, r.exit_code, r.out, r.err));
  }
  return r.exit_code == 0 ? 1 : 0;
}

std::size_t DovecotServer::logins(const std::string& user) const {
  const std::string all = log();
  const std::string needle = "Login: user=<" + user + ">";
  std::size_t n = 0;
  for (auto at = all.find(needle); at != std::string::npos; at = all.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

std::string DovecotServer::log() const {
  return read_file(dir_.path() / "dovecot.log") + read_file(dir_.path() / "dovecot.out");
}

std::string DovecotServer::log_tail(std::size_t max_bytes) const {
  const std::string all = log();
  return all.size() <= max_bytes ? all : "..." + all.substr(all.size() - max_bytes);
}

}  // namespace iop::test
