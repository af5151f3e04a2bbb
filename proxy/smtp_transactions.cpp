#include "proxy/smtp_transactions.hpp"

#include <algorithm>
#include <charconv>

#include "common/ascii.hpp"

namespace iop::proxy::smtp {
namespace {

// A command line longer than this is not one any server accepts (RFC 5321 §4.5.3.1.4: 512;
// RFC 4954 §4: 12,288 for AUTH).
constexpr std::size_t max_command_line = 64 * 1024;
// Replies owed at most; a client that pipelines more without reading is not followed.
constexpr std::size_t max_expected = 10'000;

constexpr std::string_view end_of_data = "\r\n.\r\n";

}  // namespace

void TransactionCounter::client_bytes(std::string_view bytes) {
  while (!bytes.empty() && !lost_) {
    switch (mode_) {
      case Mode::chunk: {
        const auto skip =
            static_cast<std::size_t>(std::min<std::uint64_t>(chunk_left_, bytes.size()));
        chunk_left_ -= skip;
        bytes.remove_prefix(skip);
        if (chunk_left_ == 0) {
          mode_ = Mode::command;
        }
        break;
      }
      case Mode::data:
        data_bytes(bytes);
        break;
      case Mode::command: {
        const auto eol = bytes.find('\n');
        const auto piece = bytes.substr(0, eol == std::string_view::npos ? bytes.size() : eol);
        if (line_.size() + piece.size() > max_command_line) {
          lost_ = true;
          return;
        }
        line_.append(piece);
        if (eol == std::string_view::npos) {
          return;
        }
        bytes.remove_prefix(eol + 1);
        std::string line = std::move(line_);
        line_.clear();
        if (!line.empty() && line.back() == '\r') {
          line.pop_back();
        }
        command(line);
        break;
      }
    }
  }
}

void TransactionCounter::data_bytes(std::string_view& bytes) {
  while (!bytes.empty()) {
    const char c = bytes.front();
    bytes.remove_prefix(1);
    if (c == end_of_data[static_cast<std::size_t>(end_match_)]) {
      ++end_match_;
    } else {
      end_match_ = c == '\r' ? 1 : 0;
    }
    if (end_match_ == static_cast<int>(end_of_data.size())) {
      expected_.push_back(Expect::data_end);
      mode_ = Mode::command;
      end_match_ = 2;
      return;
    }
  }
}

void TransactionCounter::command(std::string_view line) {
  if (expected_.size() >= max_expected) {
    lost_ = true;
    return;
  }
  const auto space = line.find(' ');
  const std::string verb = ascii_uppered(line.substr(0, space));
  if (verb == "DATA") {
    expected_.push_back(Expect::data);
    data_pending_ = true;
    return;
  }
  if (verb == "BDAT") {
    std::string_view args = space == std::string_view::npos ? "" : line.substr(space + 1);
    const auto size_text = args.substr(0, args.find(' '));
    std::uint64_t size = 0;
    const auto [end, ec] =
        std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
    if (ec != std::errc() || end != size_text.data() + size_text.size()) {
      expected_.push_back(Expect::other);  // a syntax error: the server refuses it, no chunk
      return;
    }
    const auto rest = args.substr(size_text.size());
    expected_.push_back(ascii_iequals(rest, " LAST") ? Expect::bdat_last : Expect::bdat);
    if (size > 0) {
      chunk_left_ = size;
      mode_ = Mode::chunk;
    }
    return;
  }
  expected_.push_back(Expect::other);
}

void TransactionCounter::server_bytes(std::string_view bytes) {
  if (lost_) {
    return;
  }
  replies_.feed(bytes);
  while (auto reply = replies_.next()) {
    if (expected_.empty()) {
      continue;  // unsolicited (a 421 before closing)
    }
    const Expect what = expected_.front();
    expected_.pop_front();
    switch (what) {
      case Expect::data:
        data_pending_ = false;
        if (reply->code == 354) {
          mode_ = Mode::data;
          end_match_ = 2;
        }
        break;
      case Expect::data_end:
      case Expect::bdat_last:
        if (reply->positive()) {
          ++accepted_;
        }
        break;
      case Expect::bdat:
      case Expect::other:
        break;
    }
  }
  if (replies_.error()) {
    lost_ = true;
  }
}

}  // namespace iop::proxy::smtp
