#pragma once
// Incremental IMAP command tokenizer for the not-authenticated state (RFC 9051 §2.2, §4, §9;
// RFC 3501 for IMAP4rev1 clients; RFC 7888 LITERAL+). Bytes go in with feed(), complete command
// lines come out of next(). Pure: no I/O, never writes; what must be sent (the continuation for a
// synchronizing literal, the BAD for an error) is reported to the caller.
//
// Decisions (see also imap_lexer.cpp):
// - A line ends with CRLF; a bare LF is accepted as a line end too (some clients send it). A CR
//   followed by anything but LF is an error.
// - Errors inside a line of acceptable length are recoverable: next() reports `invalid` at once
//   (with the tag when it was read already), then the rest of the offending line is discarded,
//   including the data of any `{n+}` literal on it, and lexing resumes at the next line.
// - Some errors are fatal (`LexResult::fatal`): a line longer than max_line_bytes, a
//   non-synchronizing literal over the limit (its data is already on the way and the next
//   command cannot be found without reading it), and more input than max_buffered_bytes
//   buffered. They are reported once; the lexer then drops all input and the session closes.
// - A synchronizing literal over the limit is refused as soon as its `}` arrives (the client
//   waits for the continuation, so nothing is read or allocated); the line is then skipped.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/secret.hpp"
#include "proxy/imap_command.hpp"

namespace iop::proxy {

// Limits, all per connection before login. Small values make tests easy.
struct LexerLimits {
  // Bytes of one line, CRLF and literal headers included, literal data excluded.
  std::size_t max_line_bytes = 8 * 1024;
  // Literal data of one command, summed over its literals (so also the largest single literal).
  std::size_t max_literal_bytes = 64 * 1024;
  // Arguments of one command after its name: strings and "(" count, ")" does not. RFC 2971 ID
  // allows 30 field-value pairs, hence 64.
  std::size_t max_arguments = 64;
  // Nesting of parenthesized lists.
  std::size_t max_list_depth = 8;
  // Raw bytes fed but not yet consumed by next(). More is a fatal error (input_overflow).
  std::size_t max_buffered_bytes = 80 * 1024;
};

// What next() found.
enum class LexStatus {
  need_more,       // nothing complete yet: feed more bytes
  command,         // LexResult::command holds a complete command line
  literal_wanted,  // a synchronizing literal was announced: send "+ ..." (RFC 9051 §7.5), or
                   // refuse it with refuse_literal(); LexResult::tag and command.name say whose
  response_line,   // LexResult::line holds the line asked for by expect_response_line()
  invalid,         // LexResult::error, reason, tag and fatal say what was wrong
};

// Why a line was rejected.
enum class LexError {
  none,
  empty_line,              // CRLF alone
  bad_tag,                 // tag missing or with a character outside RFC 9051 `tag`
  missing_command_name,    // a tag and nothing else
  bad_command_name,        // command name is not an atom
  bad_character,           // a character not allowed in an atom (CTL, 8-bit, "{" inside)
  unexpected_character,    // a valid character in the wrong place (double SP, "x" after a string)
  bad_escape,              // a backslash not followed by '"' or '\' in a quoted string
  unterminated_quoted,     // end of line inside a quoted string
  nul_byte,                // NUL in a quoted string or a literal (RFC 9051 CHAR8 excludes it)
  bad_literal_header,      // "{" not followed by digits, optional "+", "}" and CRLF
  literal_too_large,       // literal data over max_literal_bytes for the command
  too_many_arguments,      // more than max_arguments
  unbalanced_parentheses,  // ")" without "(" or a line ending inside a list
  list_too_deep,           // more than max_list_depth nested lists
  bare_cr,                 // CR not followed by LF
  line_too_long,           // more than max_line_bytes (fatal)
  input_overflow,          // more than max_buffered_bytes pending (fatal)
};

// A short, fixed English text for `error`, fit for a BAD response.
std::string_view to_string(LexError error);

// One result of next(). Only the fields for `status` are set.
struct LexResult {
  LexStatus status = LexStatus::need_more;
  Command command;  // status == command; for literal_wanted only command.name is set
  Secret line;      // status == response_line: the line without its CRLF
  LexError error = LexError::none;
  std::string tag;     // invalid: the tag if it was read before the error, else empty;
                       // literal_wanted: the tag of the command
  bool fatal = false;  // status == invalid: the lexer stopped; close the connection
};

class ImapLexer {
 public:
  explicit ImapLexer(LexerLimits limits = {});
  ~ImapLexer();
  ImapLexer(const ImapLexer&) = delete;
  ImapLexer& operator=(const ImapLexer&) = delete;

  // Appends `bytes` to the input. Accepts at most max_buffered_bytes of unconsumed input; the
  // excess is dropped and next() reports input_overflow once the accepted part is consumed.
  // After a fatal error, input is dropped.
  void feed(std::string_view bytes);

  // Consumes buffered input up to the next result. Call until it returns need_more.
  LexResult next();

  // The next line (used after "+ " of AUTHENTICATE, RFC 9051 §6.2.2) is returned whole as a
  // response_line instead of being tokenized. Call at a line boundary, right after the command.
  void expect_response_line();

  // Forgets everything: buffered bytes, a partial line, a pending expect_response_line() and a
  // fatal error. Used after STARTTLS so nothing sent in plaintext survives (CVE-2011-0411).
  void reset();

  // The continuation for the synchronizing literal just reported will not be sent: the server
  // answers the command with a tagged NO or BAD instead, and the client gives the command up
  // (RFC 9051 §7.5). Forgets the partial line; the next byte starts a new command. Call right
  // after next() returned literal_wanted.
  void refuse_literal();

  // Removes and returns the raw bytes fed but not consumed (pipelined after a LOGIN, for the
  // relay). Call at a line boundary, right after next() returned the command.
  std::string take_buffered();

  // True after a fatal error.
  [[nodiscard]] bool dead() const { return state_ == State::dead; }
  // True if input was dropped because of max_buffered_bytes.
  [[nodiscard]] bool overflowed() const { return overflow_; }
  // Unconsumed input bytes held right now.
  [[nodiscard]] std::size_t buffered_bytes() const { return buffer_.size() - pos_; }

 private:
  enum class State {
    line_start,     // before the tag
    token_start,    // after SP or "(": a token, "(" or ")" comes
    bare,           // inside a tag, command name or atom
    quoted,         // inside "..."
    quoted_escape,  // after "\" inside "..."
    literal_count,  // after "{": digits
    literal_plus,   // after "{n+": expecting "}"
    literal_close,  // after "}": expecting CR or LF
    literal_lf,     // after "}" CR: expecting LF
    literal_data,   // reading literal bytes
    after_token,    // after a quoted string, literal or ")": SP, ")" or end of line
    line_lf,        // after a final CR: expecting LF
    skip_line,      // discarding the rest of an invalid line
    skip_literal,   // discarding the data of a {n+} literal on an invalid line
    response_line,  // collecting a raw line for expect_response_line()
    dead,           // after a fatal error
  };

  using Step = bool;  // true: `out` holds a result to return

  Step step(unsigned char c, LexResult& out);
  Step on_token_start(unsigned char c, LexResult& out);
  Step on_bare(unsigned char c, LexResult& out);
  Step on_after_token(unsigned char c, LexResult& out);
  Step on_literal_header_end(LexResult& out);
  Step on_literal_header_done(LexResult& out);
  Step on_skip_line(unsigned char c, LexResult& out);
  Step consume_literal(LexResult& out);
  void consume_skipped_literal();
  Step close_list(LexResult& out);
  Step end_line(LexResult& out);
  void push_token(ArgKind kind);
  Step fail(LexError error, bool at_line_end, LexResult& out);
  Step fail_fatal(LexError error, LexResult& out);
  void clear_line();
  void compact();

  LexerLimits limits_;
  std::string buffer_;
  std::size_t pos_ = 0;
  bool overflow_ = false;
  bool response_line_wanted_ = false;

  State state_ = State::line_start;
  std::size_t line_bytes_ = 0;     // bytes of the current line, literal data excluded
  std::size_t field_ = 0;          // 0: tag, 1: command name, 2+: arguments
  std::size_t arg_count_ = 0;      // arguments counted against max_arguments
  std::size_t depth_ = 0;          // open "(" in the current line
  std::size_t literal_total_ = 0;  // literal bytes announced in the current command
  std::uint64_t literal_count_ = 0;
  std::size_t literal_digits_ = 0;
  bool literal_sync_ = true;
  std::uint64_t literal_remaining_ = 0;
  std::string token_;      // the token being read
  std::string skip_tail_;  // the last bytes of a skipped line, to spot a trailing {n+}
  Command command_;        // the command being read
};

}  // namespace iop::proxy
