#pragma once
// Wiping the strings of a parsed JSON document before it is freed. A token endpoint's answer and
// a Redis token entry hold access and refresh tokens, and the strings of an nlohmann::json
// document are plain std::string, freed without wiping (issue #7, item 9).
//
// Header-only, for any nlohmann::basic_json: the caller links nlohmann_json, common does not.

#include <utility>
#include <vector>

#include "common/wipe.hpp"

namespace iop {

// Wipes every string value in `doc`, at any depth, with the project's one wipe (secure_wipe over
// the whole capacity, the small-string buffer included). Afterwards every string value is empty;
// numbers, booleans and object keys (field names, never secrets) are left alone. Iterative: a
// deeply nested document cannot exhaust the stack.
template <class Json>
void wipe_json_strings(Json& doc) {
  std::vector<Json*> pending{&doc};
  while (!pending.empty()) {
    Json* node = pending.back();
    pending.pop_back();
    if (node->is_string()) {
      secure_wipe(node->template get_ref<typename Json::string_t&>());
    } else if (node->is_structured()) {
      for (auto& child : *node) {
        pending.push_back(&child);
      }
    }
  }
}

// Wipes `doc` (as wipe_json_strings) when it goes out of scope, on every return path.
template <class Json>
class JsonWipeGuard {
 public:
  explicit JsonWipeGuard(Json& doc) : doc_(doc) {}
  ~JsonWipeGuard() { wipe_json_strings(doc_); }
  JsonWipeGuard(const JsonWipeGuard&) = delete;
  JsonWipeGuard& operator=(const JsonWipeGuard&) = delete;

 private:
  Json& doc_;
};

}  // namespace iop
