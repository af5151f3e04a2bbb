#include "tests/support/token_endpoint_peer.hpp"

#include <curl/curl.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string_view>

#include "common/ascii.hpp"

namespace iop::test {

namespace {

using namespace std::chrono_literals;

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// application/x-www-form-urlencoded value encoding (unreserved characters kept).
std::string form_encode(const std::string& value) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (is_ascii_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

std::size_t keep_location(char* data, std::size_t size, std::size_t count, void* user) {
  const std::string_view line(data, size * count);
  constexpr std::string_view name = "location:";
  // Header names ignore case (RFC 9110 §5.1).
  if (line.size() > name.size() && ascii_istarts_with(line, name)) {
    std::string value(line.substr(name.size()));
    const auto first = value.find_first_not_of(" \t");
    const auto last = value.find_last_not_of(" \t\r\n");
    *static_cast<std::string*>(user) =
        first == std::string::npos ? "" : value.substr(first, last - first + 1);
  }
  return size * count;
}

// One request to the peer: POST `body` with `content_type` when `post`, else GET. Redirects are
// not followed. Throws std::runtime_error when no HTTP answer arrives.
HttpReply request(const std::string& url, bool post, const std::string& body,
                  const char* content_type) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) {
    throw std::runtime_error("curl_easy_init failed");
  }
  std::unique_ptr<curl_slist, SlistDeleter> headers(
      curl_slist_append(nullptr, (std::string("Content-Type: ") + content_type).c_str()));
  HttpReply reply;
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &append_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &keep_location);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &reply.location);
  if (post) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  }
  const CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    throw std::runtime_error("test token endpoint: " + url + ": " + curl_easy_strerror(rc));
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
  return reply;
}

nlohmann::json expect_json(const std::string& what, const HttpReply& reply) {
  if (reply.status != 200) {
    throw std::runtime_error("test token endpoint: " + what + " answered HTTP " +
                             std::to_string(reply.status) + ": " + reply.body);
  }
  return nlohmann::json::parse(reply.body);
}

}  // namespace

TokenEndpointPeer::TokenEndpointPeer() {
  const auto port_file = dir_.path() / "port";
  const auto log = dir_.path() / "token_endpoint.log";
  process_ =
      Process::start({"python3", std::string(IOP_SOURCE_DIR) + "/tests/peers/token_endpoint.py",
                      "--port-file", port_file.string()},
                     log);
  // Python's start-up takes a few hundred ms on a busy machine; the bound only stops a hang.
  const auto started = wait_for_start(
      process_,
      [&] {
        if (!std::filesystem::exists(port_file)) {
          return false;
        }
        port_ = std::stoi(read_file(port_file));
        return true;
      },
      20s);
  if (started == StartUp::exited) {
    throw std::runtime_error("the test token endpoint exited at startup; its log:\n" +
                             read_file(log));
  }
  if (started == StartUp::timed_out) {
    throw std::runtime_error(
        "the test token endpoint did not publish its port in time; its log:\n" + read_file(log));
  }
}

TokenEndpointPeer::~TokenEndpointPeer() { process_.kill_and_wait(); }

std::string TokenEndpointPeer::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

std::string TokenEndpointPeer::token_url(const std::string& tenant) const {
  return base_url() + "/" + tenant + "/oauth2/v2.0/token";
}

std::string TokenEndpointPeer::authorize_url_base(const std::string& tenant) const {
  return base_url() + "/" + tenant + "/oauth2/v2.0/authorize";
}

std::string TokenEndpointPeer::device_url(const std::string& tenant) const {
  return base_url() + "/" + tenant + "/oauth2/v2.0/devicecode";
}

std::string TokenEndpointPeer::introspect_url() const { return base_url() + "/introspect"; }

nlohmann::json TokenEndpointPeer::admin_post(const std::string& call, const nlohmann::json& body) {
  return expect_json(call,
                     request(base_url() + "/admin/" + call, true, body.dump(), "application/json"));
}

std::string TokenEndpointPeer::add_account(const std::string& email) {
  return admin_post("accounts", {{"email", email}})["refresh_token"].get<std::string>();
}

nlohmann::json TokenEndpointPeer::configure(const nlohmann::json& config) {
  return admin_post("config", config);
}

void TokenEndpointPeer::add_faults(const nlohmann::json& faults, const std::string& email) {
  nlohmann::json body{{"faults", faults}};
  if (!email.empty()) {
    body["email"] = email;
  }
  admin_post("faults", body);
}

void TokenEndpointPeer::clear_faults() { admin_post("clear_faults", nlohmann::json::object()); }

void TokenEndpointPeer::revoke(const std::string& email) {
  admin_post("revoke", {{"email", email}});
}

void TokenEndpointPeer::revoke_access_tokens(const std::string& email) {
  admin_post("revoke_access_tokens", {{"email", email}});
}

nlohmann::json TokenEndpointPeer::check(const std::string& refresh_token) {
  return admin_post("check", {{"refresh_token", refresh_token}});
}

nlohmann::json TokenEndpointPeer::introspect(const std::string& access_token) {
  return expect_json("introspect",
                     request(introspect_url(), true, "token=" + form_encode(access_token),
                             "application/x-www-form-urlencoded"));
}

nlohmann::json TokenEndpointPeer::stats() {
  return expect_json("stats", request(base_url() + "/admin/stats", false, "", "text/plain"));
}

void TokenEndpointPeer::reset_stats() { admin_post("reset_stats", nlohmann::json::object()); }

void TokenEndpointPeer::set_signin(const std::string& email, const std::string& mailbox) {
  nlohmann::json body{{"email", email}};
  if (!mailbox.empty()) {
    body["mailbox"] = mailbox;
  }
  admin_post("signin", body);
}

void TokenEndpointPeer::set_authorize_outcome(const nlohmann::json& outcome) {
  admin_post("authorize_outcome", outcome);
}

void TokenEndpointPeer::set_id_token_fault(const std::string& kind) {
  admin_post("id_token_fault", {{"kind", kind}});
}

nlohmann::json TokenEndpointPeer::set_device_script(const nlohmann::json& script) {
  return admin_post("device_script", script.is_null() ? nlohmann::json::object() : script);
}

nlohmann::json TokenEndpointPeer::device_polls() {
  return expect_json("device_polls",
                     request(base_url() + "/admin/device_polls", false, "", "text/plain"));
}

nlohmann::json TokenEndpointPeer::register_app(const nlohmann::json& app) {
  return admin_post("apps", app);
}

HttpReply TokenEndpointPeer::authorize(const std::string& authorize_url) {
  return request(authorize_url, false, "", "text/plain");
}

std::string TokenEndpointPeer::follow_authorize(const std::string& authorize_url) {
  const auto reply = authorize(authorize_url);
  if (reply.status != 302 || reply.location.empty()) {
    throw std::runtime_error("test token endpoint: authorize answered HTTP " +
                             std::to_string(reply.status) + " without a redirect: " + reply.body);
  }
  return reply.location;
}

HttpReply TokenEndpointPeer::post_form(
    const std::string& url, const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string body;
  for (const auto& [name, value] : fields) {
    if (!body.empty()) {
      body += '&';
    }
    body += form_encode(name) + '=' + form_encode(value);
  }
  return request(url, true, body, "application/x-www-form-urlencoded");
}

}  // namespace iop::test
