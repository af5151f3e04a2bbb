#include "client/command_parts.hpp"

#include "client/response_reader.hpp"

namespace iop::client {

std::optional<std::vector<std::string_view>> split_at_literals(std::string_view command,
                                                               std::string& error) {
  std::vector<std::string_view> parts;
  std::size_t part_start = 0;
  std::size_t pos = 0;
  for (;;) {
    const auto eol = command.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      error = "a command must end with CRLF";
      return std::nullopt;
    }
    const std::string_view line = command.substr(pos, eol - pos);
    const auto n = trailing_literal_length(line);
    if (!n) {
      if (eol + 2 != command.size()) {
        error = "a CRLF outside a literal ends the command: send one command at a time";
        return std::nullopt;
      }
      parts.push_back(command.substr(part_start));
      return parts;
    }
    const std::size_t data = eol + 2;
    if (*n > command.size() - data) {
      error = "a literal announces more bytes than the command holds";
      return std::nullopt;
    }
    if (!line.ends_with("+}")) {
      parts.push_back(command.substr(part_start, data - part_start));
      part_start = data;
    }
    pos = data + *n;
  }
}

}  // namespace iop::client
