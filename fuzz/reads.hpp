#pragma once
// How every fuzz target cuts its peer's bytes into reads: pieces of 1..64 bytes whose sizes come
// from a small LCG seeded by an input byte, so libFuzzer explores the cuts along with the bytes
// and a crash input replays the same cut. Each target then checks that the cut changes nothing.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace iop::fuzz {

inline std::vector<std::string_view> cut_into_reads(std::string_view data, std::uint8_t seed) {
  std::vector<std::string_view> out;
  std::uint32_t state = seed;
  while (!data.empty()) {
    state = state * 1103515245u + 12345u;
    const std::size_t n = std::min<std::size_t>(data.size(), 1 + (state >> 16) % 64);
    out.push_back(data.substr(0, n));
    data.remove_prefix(n);
  }
  return out;
}

}  // namespace iop::fuzz
