#pragma once
// Secret: a string that never prints. Access tokens, refresh tokens, passwords, client secrets,
// the master key and SASL strings are Secret from the moment they enter the program.

#include <fmt/format.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace iop {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  explicit Secret(std::string_view value) : value_(value) {}
  explicit Secret(const char* value) : value_(value) {}
  Secret(const Secret& other) = default;
  Secret(Secret&& other) noexcept;
  Secret& operator=(const Secret& other);
  Secret& operator=(Secret&& other) noexcept;
  ~Secret();

  // The bytes themselves. Call only where they must leave the program (HTTP body, SASL string,
  // encryption, constant-time comparison).
  [[nodiscard]] const std::string& reveal() const { return value_; }
  [[nodiscard]] bool empty() const { return value_.empty(); }
  [[nodiscard]] std::size_t size() const { return value_.size(); }

  // Constant-time comparison of equal-length values (length itself is not hidden).
  friend bool operator==(const Secret& a, const Secret& b);

 private:
  void wipe() noexcept;
  std::string value_;
};

}  // namespace iop

template <>
struct fmt::formatter<iop::Secret> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const iop::Secret&, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format("[redacted]", ctx);
  }
};
