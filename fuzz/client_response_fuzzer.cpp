// libFuzzer target for the client library's pure response reader (client/response_reader.hpp,
// issue #8; STYLE.md §3.10): an IMAP server's bytes after login, framed into responses with
// their literals.
//
// First input byte: the seed for the read sizes; bit 0 of the second: small limits. The rest: the
// server's bytes. Checks, besides the sanitizers:
// - the same bytes cut into arbitrary reads give the same responses and the same error as in one
//   read (a reader must not depend on where the network cut);
// - each literal is no larger than max_literal_bytes, each response's text holds one "{N}"
//   marker ending a line for each literal, and a tagged response has a tag;
// - the bytes returned (responses) plus buffered() never exceed what was fed.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "client/response_reader.hpp"
#include "fuzz/reads.hpp"
#include "fuzz/require.hpp"

namespace {

using iop::fuzz::require;
using namespace iop::client;

using iop::fuzz::cut_into_reads;

std::string run(const ResponseLimits& limits, const std::vector<std::string_view>& pieces) {
  ResponseReader reader(limits);
  std::string transcript;
  std::size_t fed = 0;
  for (const auto piece : pieces) {
    reader.feed(piece);
    fed += piece.size();
    while (auto r = reader.next()) {
      require(r->kind != ResponseKind::tagged || !r->tag.empty());
      std::size_t markers = 0;
      for (std::size_t at = r->text.find("}\r\n"); at != std::string::npos;
           at = r->text.find("}\r\n", at + 1)) {
        ++markers;
      }
      require(markers == r->literals.size());
      for (const auto& literal : r->literals) {
        require(literal.size() <= limits.max_literal_bytes);
      }
      transcript += std::to_string(static_cast<int>(r->kind)) + "|" + r->tag + "|" + r->text;
      for (const auto& literal : r->literals) {
        transcript += "|" + std::to_string(literal.size()) + ":" + literal;
      }
      transcript += "\n";
    }
    require(reader.buffered().size() <= fed);
  }
  if (reader.error()) {
    transcript += "error: " + *reader.error() + "\n";
  }
  return transcript;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) {
    return 0;
  }
  const std::uint8_t seed = data[0];
  ResponseLimits limits;
  if ((data[1] & 1) != 0) {
    limits.max_line_bytes = 64;
    limits.max_literal_bytes = 32;
    limits.max_response_bytes = 256;
  }
  const std::string_view bytes(reinterpret_cast<const char*>(data + 2), size - 2);
  const std::string whole = run(limits, {bytes});
  const std::string pieces = run(limits, cut_into_reads(bytes, seed));
  require(whole == pieces);
  return 0;
}
