#pragma once
// The project's one secure wipe: overwriting memory that held secret material (a password, a
// token, a SASL message, a private key) before it is reused or freed. Secret, the JSON wipe and
// every buffer of the proxy, auth, storage and certs parts go through these functions.

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace iop {

// Zeroes the bytes; the writes are not removed as dead stores (OPENSSL_cleanse).
void secure_wipe(std::span<std::byte> bytes) noexcept;
void secure_wipe(std::span<char> bytes) noexcept;
void secure_wipe(std::span<unsigned char> bytes) noexcept;

// Zeroes every byte `s` owns, including those past size() left by earlier, longer contents (a
// moved-from short string keeps its bytes in the small buffer), then empties it. The capacity is
// kept: the caller may reuse the buffer.
void secure_wipe(std::string& s) noexcept;

// The same for a byte vector: the whole capacity, then empty.
void secure_wipe(std::vector<unsigned char>& v) noexcept;

}  // namespace iop
