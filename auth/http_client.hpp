#pragma once
// A blocking HTTPS form POST (libcurl easy API). Call from a worker thread, never an I/O thread.

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/secret.hpp"

namespace iop::auth {

struct HttpResponse {
  int status = 0;
  std::string body;
  std::optional<std::string> retry_after;  // the Retry-After header, if any
};

struct HttpOptions {
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds connect_timeout{5000};
  std::string ca_file;  // empty: the system trust store
};

// POSTs `fields` as application/x-www-form-urlencoded (values URL-encoded). TLS peer and host
// verification are always on for https://. No redirects are followed. A transport failure
// (DNS, connect, TLS, timeout, reset) fails with Errc::endpoint_unavailable and curl's reason;
// any HTTP status is a success here.
Result<HttpResponse> post_form(const std::string& url,
                               const std::vector<std::pair<std::string, Secret>>& fields,
                               const HttpOptions& options);

// Whether `url` is https://, or http:// to a loopback host (127.0.0.0/8, ::1, localhost).
bool acceptable_endpoint_url(std::string_view url);

}  // namespace iop::auth
