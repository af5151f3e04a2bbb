#include "proxy/imap_lexer.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/ascii.hpp"
#include "common/wipe.hpp"
#include "proxy/imap_chars.hpp"

namespace iop::proxy {
namespace {

using imap::is_atom_char;
using imap::is_tag_char;

// Bare arguments are read leniently: every CHAR but CTL, SP, "(", ")", "{" and DQUOTE, so that
// post-login syntax (LIST patterns with "%" and "*", flags like "\Seen", "BODY[]") reaches the
// state machine and is answered "not allowed before login" rather than with a syntax error.
bool is_bare_arg_char(unsigned char c) {
  return imap::is_char(c) && !imap::is_ctl(c) && c != ' ' && c != '(' && c != ')' && c != '{' &&
         c != '"';
}

// A skipped line keeps this many of its last bytes, enough to see a trailing "{n+}".
constexpr std::size_t skip_tail_keep = 64;

enum class TailLiteral { none, found, unknown };

// Does a skipped line (CR and LF removed) end with a non-synchronizing literal header "{n+}"?
// `unknown`: it ends with digits and "+}" but the "{" was cut off with the start of the line.
TailLiteral tail_literal(std::string_view tail, std::uint64_t limit, std::uint64_t& count) {
  if (tail.size() < 2 || tail.substr(tail.size() - 2) != "+}") {
    return TailLiteral::none;
  }
  tail.remove_suffix(2);
  std::size_t start = tail.size();
  while (start > 0 && is_ascii_digit(tail[start - 1])) {
    --start;
  }
  if (start == tail.size()) {
    return TailLiteral::none;
  }
  if (start == 0) {
    return TailLiteral::unknown;
  }
  if (tail[start - 1] != '{') {
    return TailLiteral::none;
  }
  count = 0;
  for (std::size_t i = start; i < tail.size(); ++i) {
    if (count <= limit) {
      count = count * 10 + static_cast<std::uint64_t>(tail[i] - '0');
    }
  }
  return TailLiteral::found;
}

}  // namespace

std::string_view to_string(LexError error) {
  switch (error) {
    case LexError::none:
      return "no error";
    case LexError::empty_line:
      return "Empty command line";
    case LexError::bad_tag:
      return "Invalid tag";
    case LexError::missing_command_name:
      return "Missing command name";
    case LexError::bad_command_name:
      return "Invalid command name";
    case LexError::bad_character:
      return "Invalid character in atom";
    case LexError::unexpected_character:
      return "Unexpected character or space";
    case LexError::bad_escape:
      return "Invalid escape in quoted string";
    case LexError::unterminated_quoted:
      return "Unterminated quoted string";
    case LexError::nul_byte:
      return "NUL byte not allowed";
    case LexError::bad_literal_header:
      return "Invalid literal header";
    case LexError::literal_too_large:
      return "Literal too large";
    case LexError::too_many_arguments:
      return "Too many arguments";
    case LexError::unbalanced_parentheses:
      return "Unbalanced parentheses";
    case LexError::list_too_deep:
      return "Lists nested too deeply";
    case LexError::bare_cr:
      return "CR not followed by LF";
    case LexError::line_too_long:
      return "Command line too long";
    case LexError::input_overflow:
      return "Too much pipelined input";
  }
  return "Invalid command";
}

ImapLexer::ImapLexer(LexerLimits limits) : limits_(limits) {}

ImapLexer::~ImapLexer() {
  secure_wipe(buffer_);
  secure_wipe(token_);
}

void ImapLexer::feed(std::string_view bytes) {
  if (state_ == State::dead) {
    return;
  }
  compact();
  const std::size_t pending = buffer_.size();
  const std::size_t room =
      pending < limits_.max_buffered_bytes ? limits_.max_buffered_bytes - pending : 0;
  if (bytes.size() > room) {
    bytes = bytes.substr(0, room);
    overflow_ = true;
  }
  buffer_.append(bytes);
}

void ImapLexer::expect_response_line() { response_line_wanted_ = true; }

void ImapLexer::reset() {
  secure_wipe(buffer_);
  pos_ = 0;
  overflow_ = false;
  response_line_wanted_ = false;
  clear_line();
  state_ = State::line_start;
  line_bytes_ = 0;
}

void ImapLexer::refuse_literal() {
  if (state_ != State::literal_data) {
    return;
  }
  clear_line();
  state_ = State::line_start;
  line_bytes_ = 0;
}

std::string ImapLexer::take_buffered() {
  std::string rest = buffer_.substr(pos_);
  secure_wipe(buffer_);
  pos_ = 0;
  return rest;
}

LexResult ImapLexer::next() {
  LexResult out;
  while (state_ != State::dead) {
    if (state_ == State::line_start && response_line_wanted_) {
      response_line_wanted_ = false;
      state_ = State::response_line;
    }
    if (state_ == State::literal_data) {
      if (literal_remaining_ == 0) {
        push_token(ArgKind::literal);
        state_ = State::after_token;
        continue;
      }
      if (pos_ == buffer_.size()) {
        break;
      }
      if (consume_literal(out)) {
        return out;
      }
      continue;
    }
    if (state_ == State::skip_literal) {
      if (literal_remaining_ == 0) {
        state_ = State::skip_line;
        continue;
      }
      if (pos_ == buffer_.size()) {
        break;
      }
      consume_skipped_literal();
      continue;
    }
    if (pos_ == buffer_.size()) {
      break;
    }
    const auto c = static_cast<unsigned char>(buffer_[pos_++]);
    if (step(c, out)) {
      return out;
    }
  }
  compact();
  if (overflow_ && state_ != State::dead) {
    // Everything accepted was consumed; what was dropped cannot be recovered.
    fail_fatal(LexError::input_overflow, out);
  }
  return out;
}

ImapLexer::Step ImapLexer::step(unsigned char c, LexResult& out) {
  // Line length counts every byte but literal data, so a line that never ends is refused once it
  // passes the limit instead of being buffered (issue #3: 1 MB without a newline).
  if (++line_bytes_ > limits_.max_line_bytes) {
    return fail_fatal(LexError::line_too_long, out);
  }
  switch (state_) {
    case State::line_start:
      state_ = State::token_start;
      return on_token_start(c, out);
    case State::token_start:
      return on_token_start(c, out);
    case State::bare:
      return on_bare(c, out);
    case State::quoted:
      // RFC 9051 §4.3: quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR is any TEXT-CHAR (no CR,
      // LF, NUL) except DQUOTE and "\", which must be escaped. 8-bit bytes (UTF-8) are kept.
      if (c == '"') {
        push_token(ArgKind::quoted);
        state_ = State::after_token;
        return false;
      }
      if (c == '\\') {
        state_ = State::quoted_escape;
        return false;
      }
      if (c == '\r' || c == '\n') {
        return fail(LexError::unterminated_quoted, c == '\n', out);
      }
      if (c == 0) {
        return fail(LexError::nul_byte, false, out);
      }
      token_ += static_cast<char>(c);
      return false;
    case State::quoted_escape:
      if (imap::is_quoted_special(c)) {
        token_ += static_cast<char>(c);
        state_ = State::quoted;
        return false;
      }
      if (c == '\r' || c == '\n') {
        return fail(LexError::unterminated_quoted, c == '\n', out);
      }
      return fail(LexError::bad_escape, false, out);
    case State::literal_count:
      // RFC 9051 §4.3 literal = "{" number64 ["+"] "}" CRLF; the count saturates just above the
      // limit, so a 2^40 or 30-digit count needs no big arithmetic.
      if (is_ascii_digit(static_cast<char>(c))) {
        if (literal_count_ <= limits_.max_literal_bytes) {
          literal_count_ = literal_count_ * 10 + (c - '0');
        }
        ++literal_digits_;
        return false;
      }
      if (literal_digits_ > 0 && c == '+') {
        literal_sync_ = false;
        state_ = State::literal_plus;
        return false;
      }
      if (literal_digits_ > 0 && c == '}') {
        literal_sync_ = true;
        return on_literal_header_end(out);
      }
      return fail(LexError::bad_literal_header, c == '\n', out);
    case State::literal_plus:
      if (c == '}') {
        return on_literal_header_end(out);
      }
      return fail(LexError::bad_literal_header, c == '\n', out);
    case State::literal_close:
      if (c == '\r') {
        state_ = State::literal_lf;
        return false;
      }
      if (c == '\n') {
        return on_literal_header_done(out);
      }
      return fail(LexError::bad_literal_header, false, out);
    case State::literal_lf:
      if (c == '\n') {
        return on_literal_header_done(out);
      }
      return fail(LexError::bare_cr, false, out);
    case State::after_token:
      return on_after_token(c, out);
    case State::line_lf:
      if (c == '\n') {
        return end_line(out);
      }
      return fail(LexError::bare_cr, false, out);
    case State::skip_line:
      return on_skip_line(c, out);
    case State::response_line:
      if (c == '\n') {
        if (!token_.empty() && token_.back() == '\r') {
          token_.pop_back();
        }
        out.status = LexStatus::response_line;
        out.line = Secret(std::move(token_));
        secure_wipe(token_);
        state_ = State::line_start;
        line_bytes_ = 0;
        return true;
      }
      token_ += static_cast<char>(c);
      return false;
    case State::literal_data:
    case State::skip_literal:
    case State::dead:
      // next() consumes these without step().
      return false;
  }
  return false;
}

ImapLexer::Step ImapLexer::on_token_start(unsigned char c, LexResult& out) {
  if (field_ == 0) {
    if (is_tag_char(c)) {
      token_ += static_cast<char>(c);
      state_ = State::bare;
      return false;
    }
    if (c == '\r' || c == '\n') {
      return fail(LexError::empty_line, c == '\n', out);
    }
    return fail(LexError::bad_tag, false, out);
  }
  if (field_ == 1) {
    if (is_atom_char(c)) {
      token_ += ascii_upper(static_cast<char>(c));
      state_ = State::bare;
      return false;
    }
    if (c == '\r' || c == '\n') {
      return fail(LexError::missing_command_name, c == '\n', out);
    }
    return fail(LexError::bad_command_name, false, out);
  }
  const bool after_open =
      !command_.args.empty() && command_.args.back().kind == ArgKind::list_begin;
  if (c == ')') {
    // "()" is an empty list; ")" after a space ("(a )") is not in the grammar.
    if (depth_ == 0) {
      return fail(LexError::unbalanced_parentheses, false, out);
    }
    if (!after_open) {
      return fail(LexError::unexpected_character, false, out);
    }
    return close_list(out);
  }
  if (c == '\r' || c == '\n') {
    return fail(after_open ? LexError::unbalanced_parentheses : LexError::unexpected_character,
                c == '\n', out);
  }
  if (c == ' ') {
    return fail(LexError::unexpected_character, false, out);
  }
  if (c != '"' && c != '{' && c != '(' && !is_bare_arg_char(c)) {
    return fail(LexError::bad_character, false, out);
  }
  if (arg_count_ >= limits_.max_arguments) {
    return fail(LexError::too_many_arguments, false, out);
  }
  ++arg_count_;
  switch (c) {
    case '"':
      state_ = State::quoted;
      return false;
    case '{':
      literal_count_ = 0;
      literal_digits_ = 0;
      state_ = State::literal_count;
      return false;
    case '(':
      if (depth_ >= limits_.max_list_depth) {
        return fail(LexError::list_too_deep, false, out);
      }
      ++depth_;
      command_.args.push_back(Argument{ArgKind::list_begin, Secret{}});
      return false;
    default:
      token_ += static_cast<char>(c);
      state_ = State::bare;
      return false;
  }
}

ImapLexer::Step ImapLexer::on_bare(unsigned char c, LexResult& out) {
  if (field_ == 0) {
    if (is_tag_char(c)) {
      token_ += static_cast<char>(c);
      return false;
    }
    if (c == ' ' || c == '\r' || c == '\n') {
      command_.tag = std::move(token_);
      token_.clear();
      field_ = 1;
      if (c == ' ') {
        state_ = State::token_start;
        return false;
      }
      return fail(LexError::missing_command_name, c == '\n', out);
    }
    return fail(LexError::bad_tag, false, out);
  }
  if (field_ == 1) {
    if (is_atom_char(c)) {
      token_ += ascii_upper(static_cast<char>(c));
      return false;
    }
    if (c == ' ' || c == '\r' || c == '\n') {
      command_.name = std::move(token_);
      token_.clear();
      field_ = 2;
      if (c == ' ') {
        state_ = State::token_start;
        return false;
      }
      if (c == '\r') {
        state_ = State::line_lf;
        return false;
      }
      return end_line(out);
    }
    return fail(LexError::bad_command_name, false, out);
  }
  if (is_bare_arg_char(c)) {
    token_ += static_cast<char>(c);
    return false;
  }
  switch (c) {
    case ' ':
      push_token(ArgKind::atom);
      state_ = State::token_start;
      return false;
    case ')':
      push_token(ArgKind::atom);
      return close_list(out);
    case '\r':
      push_token(ArgKind::atom);
      state_ = State::line_lf;
      return false;
    case '\n':
      push_token(ArgKind::atom);
      return end_line(out);
    default:
      return fail(LexError::bad_character, false, out);
  }
}

ImapLexer::Step ImapLexer::on_after_token(unsigned char c, LexResult& out) {
  switch (c) {
    case ' ':
      state_ = State::token_start;
      return false;
    case ')':
      return close_list(out);
    case '\r':
      state_ = State::line_lf;
      return false;
    case '\n':
      return end_line(out);
    default:
      return fail(LexError::unexpected_character, false, out);
  }
}

ImapLexer::Step ImapLexer::on_literal_header_end(LexResult& out) {
  if (literal_count_ > limits_.max_literal_bytes - literal_total_) {
    // A synchronizing literal is refused before the client sends its data (RFC 9051 §7.5: a BAD
    // instead of the continuation); the rest of its line is skipped. The data of a {n+} literal
    // is already on its way, and the next command cannot be found without reading it, so that is
    // fatal (RFC 7888 §4 lets the server close the connection).
    if (!literal_sync_) {
      return fail_fatal(LexError::literal_too_large, out);
    }
    return fail(LexError::literal_too_large, false, out);
  }
  state_ = State::literal_close;
  return false;
}

ImapLexer::Step ImapLexer::on_literal_header_done(LexResult& out) {
  literal_remaining_ = literal_count_;
  literal_total_ += static_cast<std::size_t>(literal_count_);
  token_.reserve(static_cast<std::size_t>(literal_count_));
  state_ = State::literal_data;
  if (literal_sync_) {
    out.status = LexStatus::literal_wanted;
    out.tag = command_.tag;
    out.command.name = command_.name;
    return true;
  }
  return false;
}

ImapLexer::Step ImapLexer::consume_literal(LexResult& out) {
  const std::size_t available = buffer_.size() - pos_;
  const std::size_t n =
      static_cast<std::size_t>(std::min<std::uint64_t>(available, literal_remaining_));
  const char* data = buffer_.data() + pos_;
  const bool has_nul = std::memchr(data, 0, n) != nullptr;
  pos_ += n;
  literal_remaining_ -= n;
  if (has_nul) {
    // Reported at once; the rest of the literal's data and of its line are discarded.
    const std::uint64_t rest = literal_remaining_;
    fail(LexError::nul_byte, false, out);
    literal_remaining_ = rest;
    state_ = State::skip_literal;
    return true;
  }
  token_.append(data, n);
  return false;
}

void ImapLexer::consume_skipped_literal() {
  const std::size_t available = buffer_.size() - pos_;
  const std::size_t n =
      static_cast<std::size_t>(std::min<std::uint64_t>(available, literal_remaining_));
  pos_ += n;
  literal_remaining_ -= n;
  skip_tail_.clear();
}

ImapLexer::Step ImapLexer::on_skip_line(unsigned char c, LexResult& out) {
  if (c != '\n') {
    if (skip_tail_.size() >= skip_tail_keep) {
      skip_tail_.erase(0, skip_tail_keep / 2);
    }
    skip_tail_ += static_cast<char>(c);
    return false;
  }
  std::string_view tail = skip_tail_;
  if (!tail.empty() && tail.back() == '\r') {
    tail.remove_suffix(1);
  }
  // A {n+} literal ending the skipped line is followed by its data without a continuation
  // (RFC 7888 §3); skip that too, or it would be read as commands.
  std::uint64_t count = 0;
  const TailLiteral literal = tail_literal(tail, limits_.max_literal_bytes, count);
  skip_tail_.clear();
  if (literal == TailLiteral::unknown ||
      (literal == TailLiteral::found && count > limits_.max_literal_bytes)) {
    return fail_fatal(LexError::literal_too_large, out);
  }
  if (literal == TailLiteral::found) {
    literal_remaining_ = count;
    state_ = State::skip_literal;
    return false;
  }
  state_ = State::line_start;
  line_bytes_ = 0;
  return false;
}

ImapLexer::Step ImapLexer::close_list(LexResult& out) {
  if (depth_ == 0) {
    return fail(LexError::unbalanced_parentheses, false, out);
  }
  --depth_;
  command_.args.push_back(Argument{ArgKind::list_end, Secret{}});
  state_ = State::after_token;
  return false;
}

ImapLexer::Step ImapLexer::end_line(LexResult& out) {
  if (depth_ != 0) {
    return fail(LexError::unbalanced_parentheses, true, out);
  }
  out.status = LexStatus::command;
  out.command = std::move(command_);
  command_ = Command{};
  clear_line();
  state_ = State::line_start;
  line_bytes_ = 0;
  return true;
}

void ImapLexer::push_token(ArgKind kind) {
  command_.args.push_back(Argument{kind, Secret(std::move(token_))});
  secure_wipe(token_);
}

ImapLexer::Step ImapLexer::fail(LexError error, bool at_line_end, LexResult& out) {
  out.status = LexStatus::invalid;
  out.error = error;
  out.fatal = false;
  if (field_ >= 1) {
    out.tag = command_.tag;
  }
  clear_line();
  if (at_line_end) {
    state_ = State::line_start;
    line_bytes_ = 0;
  } else {
    state_ = State::skip_line;
  }
  return true;
}

ImapLexer::Step ImapLexer::fail_fatal(LexError error, LexResult& out) {
  out.status = LexStatus::invalid;
  out.error = error;
  out.fatal = true;
  if (field_ >= 1) {
    out.tag = command_.tag;
  }
  clear_line();
  state_ = State::dead;
  secure_wipe(buffer_);
  pos_ = 0;
  return true;
}

void ImapLexer::clear_line() {
  command_ = Command{};
  secure_wipe(token_);
  skip_tail_.clear();
  field_ = 0;
  arg_count_ = 0;
  depth_ = 0;
  literal_total_ = 0;
  literal_count_ = 0;
  literal_digits_ = 0;
  literal_sync_ = true;
  literal_remaining_ = 0;
}

void ImapLexer::compact() {
  if (pos_ == 0) {
    return;
  }
  const std::size_t old_size = buffer_.size();
  buffer_.erase(0, pos_);
  pos_ = 0;
  // Overwrite the bytes left behind by the shift: they may hold a password.
  const std::size_t kept = buffer_.size();
  buffer_.resize(old_size, '\0');
  buffer_.resize(kept);
}

}  // namespace iop::proxy
