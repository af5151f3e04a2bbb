#include "common/result.hpp"

namespace iop {

std::string_view to_string(Errc code) {
  switch (code) {
    case Errc::invalid_argument:
      return "invalid_argument";
    case Errc::not_found:
      return "not_found";
    case Errc::already_exists:
      return "already_exists";
    case Errc::needs_reauth:
      return "needs_reauth";
    case Errc::endpoint_unavailable:
      return "endpoint_unavailable";
    case Errc::endpoint_bad_response:
      return "endpoint_bad_response";
    case Errc::storage_unavailable:
      return "storage_unavailable";
    case Errc::credentials_corrupt:
      return "credentials_corrupt";
    case Errc::key_error:
      return "key_error";
    case Errc::config_error:
      return "config_error";
    case Errc::internal:
      return "internal";
  }
  return "unknown";
}

}  // namespace iop
