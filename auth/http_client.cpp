#include "auth/http_client.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string_view>

#include "common/ascii.hpp"
#include "common/host_port.hpp"
#include "common/wipe.hpp"

namespace iop::auth {

namespace {

// A token answer is a few KiB; anything near this is not a token endpoint talking.
constexpr std::size_t max_body_bytes = 1024 * 1024;
constexpr std::size_t max_header_value = 64;

struct CurlDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

// curl_easy_escape's output, wiped before it goes back to curl's allocator.
struct EscapedDeleter {
  void operator()(char* s) const {
    secure_wipe(std::span(s, std::char_traits<char>::length(s)));
    curl_free(s);
  }
};
using EscapedPtr = std::unique_ptr<char, EscapedDeleter>;

// curl_global_init is not thread-safe and must run once before any handle exists.
Result<void> global_init() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (rc != CURLE_OK) {
    return fail(Errc::internal,
                std::string("libcurl initialisation failed: ") + curl_easy_strerror(rc));
  }
  return {};
}

struct Transfer {
  std::string body;
  bool too_large = false;
  std::optional<std::string> retry_after;
};

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (t->body.size() + n > max_body_bytes) {
    t->too_large = true;
    return 0;  // curl then fails the transfer with CURLE_WRITE_ERROR
  }
  t->body.append(data, n);
  return n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  std::string_view line(data, n);
  // Headers of an interim response (100 Continue) come first; only the final one counts.
  if (line.starts_with("HTTP/")) {
    t->retry_after.reset();
    return n;
  }
  constexpr std::string_view name = "retry-after:";
  if (ascii_istarts_with(line, name)) {
    line.remove_prefix(name.size());
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
      line.remove_prefix(1);
    }
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n' || line.back() == ' ' ||
                             line.back() == '\t')) {
      line.remove_suffix(1);
    }
    t->retry_after = std::string(line.substr(0, max_header_value));
  }
  return n;
}

// 127.0.0.0/8 in dotted-quad form.
bool is_loopback_v4(std::string_view host) {
  int parts = 0;
  std::size_t pos = 0;
  while (pos <= host.size()) {
    const std::size_t dot = std::min(host.find('.', pos), host.size());
    const std::string_view part = host.substr(pos, dot - pos);
    if (part.empty() || part.size() > 3 || !all_ascii_digits(part)) {
      return false;
    }
    int value = 0;
    for (const char c : part) {
      value = value * 10 + (c - '0');
    }
    if (value > 255 || (parts == 0 && value != 127)) {
      return false;
    }
    ++parts;
    pos = dot + 1;
  }
  return parts == 4;
}

}  // namespace

bool acceptable_endpoint_url(std::string_view url) {
  if (std::any_of(url.begin(), url.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; })) {
    return false;
  }
  if (ascii_istarts_with(url, "https://")) {
    const auto rest = url.substr(8);
    return !rest.empty() && rest.front() != '/';
  }
  if (!ascii_istarts_with(url, "http://")) {
    return false;
  }
  // Plain HTTP only to this machine (tests). Userinfo is refused outright so that
  // "http://localhost@example.com/" cannot pass for a loopback URL.
  auto authority = url.substr(7);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) {
    return false;
  }
  const auto parsed = parse_authority(authority);
  if (!parsed) {
    return false;
  }
  const std::string host = ascii_lowered(parsed->host);
  return parsed->bracketed ? host == "::1" : host == "localhost" || is_loopback_v4(host);
}

Result<HttpResponse> post_form(const std::string& url,
                               const std::vector<std::pair<std::string, Secret>>& fields,
                               const HttpOptions& options) {
  if (!acceptable_endpoint_url(url)) {
    return fail(Errc::invalid_argument,
                "the endpoint URL must be https:// (http:// only to a loopback host)");
  }
  IOP_TRY(global_init());
  CurlPtr curl(curl_easy_init());
  if (!curl) {
    return fail(Errc::internal, "curl_easy_init failed");
  }
  CURL* h = curl.get();

  // application/x-www-form-urlencoded (RFC 6749 §4.1.3 / §6). The body holds the refresh
  // token and maybe the client secret: it is sized up front so no reallocation leaves a copy
  // behind, and it lives in a Secret so it is wiped when this function returns.
  std::vector<std::pair<EscapedPtr, EscapedPtr>> escaped;
  escaped.reserve(fields.size());
  std::size_t length = 0;
  for (const auto& [name, value] : fields) {
    EscapedPtr n(curl_easy_escape(h, name.data(), static_cast<int>(name.size())));
    EscapedPtr v(curl_easy_escape(h, value.reveal().data(), static_cast<int>(value.size())));
    if (!n || !v) {
      return fail(Errc::internal, "curl_easy_escape failed");
    }
    length +=
        std::char_traits<char>::length(n.get()) + 1 + std::char_traits<char>::length(v.get()) + 1;
    escaped.emplace_back(std::move(n), std::move(v));
  }
  std::string buffer;
  buffer.reserve(length + 1);
  for (const auto& [n, v] : escaped) {
    if (!buffer.empty()) {
      buffer += '&';
    }
    buffer += n.get();
    buffer += '=';
    buffer += v.get();
  }
  const Secret body(std::move(buffer));

  SlistPtr headers;
  for (const char* header :
       {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json",
        // No "Expect: 100-continue" round trip for a small body.
        "Expect:"}) {
    // curl_slist_append returns the list's head, or null (leaving the list as it was).
    curl_slist* head = curl_slist_append(headers.get(), header);
    if (head == nullptr) {
      return fail(Errc::internal, "curl_slist_append failed");
    }
    (void)headers.release();  // `head` owns the same nodes
    headers.reset(head);
  }

  Transfer transfer;
  transfer.body.reserve(16 * 1024);
  char error_buffer[CURL_ERROR_SIZE] = {};

  bool ok = true;
  const auto set = [&ok](CURLcode rc) { ok = ok && rc == CURLE_OK; };
  set(curl_easy_setopt(h, CURLOPT_URL, url.c_str()));
  // Signals are no way to time out a worker thread; curl's threaded resolver needs none.
  set(curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout.count())));
  set(curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                       static_cast<long>(options.connect_timeout.count())));
  set(curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http"));
  // A redirect would resend the refresh token somewhere else.
  set(curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L));
  set(curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L));
  set(curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L));
  if (!options.ca_file.empty()) {
    set(curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_file.c_str()));
  }
  set(curl_easy_setopt(h, CURLOPT_POST, 1L));
  set(curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.reveal().c_str()));
  set(curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size())));
  set(curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get()));
  set(curl_easy_setopt(h, CURLOPT_USERAGENT, "imap-oauth2-proxy"));
  set(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &on_body));
  set(curl_easy_setopt(h, CURLOPT_WRITEDATA, &transfer));
  set(curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &on_header));
  set(curl_easy_setopt(h, CURLOPT_HEADERDATA, &transfer));
  set(curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer));
  if (!ok) {
    return fail(Errc::internal, "libcurl refused an option (is it built with HTTPS support?)");
  }

  const CURLcode rc = curl_easy_perform(h);
  if (transfer.too_large) {
    secure_wipe(transfer.body);
    return fail(Errc::endpoint_bad_response, "the endpoint's answer is larger than 1 MiB");
  }
  if (rc != CURLE_OK) {
    secure_wipe(transfer.body);
    // The error buffer names the host and the failing step; it never holds the body.
    const std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(rc);
    return fail(Errc::endpoint_unavailable, "cannot reach the endpoint: " + detail);
  }
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  HttpResponse response;
  response.status = static_cast<int>(status);
  response.body = std::move(transfer.body);
  response.retry_after = std::move(transfer.retry_after);
  return response;
}

}  // namespace iop::auth
