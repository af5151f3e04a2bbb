#include "proxy/imap_lexer.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace iop::proxy {
namespace {

using namespace std::string_literals;

std::string_view error_name(LexError error) {
  switch (error) {
    case LexError::none:
      return "none";
    case LexError::empty_line:
      return "empty_line";
    case LexError::bad_tag:
      return "bad_tag";
    case LexError::missing_command_name:
      return "missing_command_name";
    case LexError::bad_command_name:
      return "bad_command_name";
    case LexError::bad_character:
      return "bad_character";
    case LexError::unexpected_character:
      return "unexpected_character";
    case LexError::bad_escape:
      return "bad_escape";
    case LexError::unterminated_quoted:
      return "unterminated_quoted";
    case LexError::nul_byte:
      return "nul_byte";
    case LexError::bad_literal_header:
      return "bad_literal_header";
    case LexError::literal_too_large:
      return "literal_too_large";
    case LexError::too_many_arguments:
      return "too_many_arguments";
    case LexError::unbalanced_parentheses:
      return "unbalanced_parentheses";
    case LexError::list_too_deep:
      return "list_too_deep";
    case LexError::bare_cr:
      return "bare_cr";
    case LexError::line_too_long:
      return "line_too_long";
    case LexError::input_overflow:
      return "input_overflow";
  }
  return "?";
}

// Printable ASCII as is, everything else as \r, \n or \xNN.
std::string escape(std::string_view bytes) {
  std::string out;
  for (const char ch : bytes) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += ch;
    }
  }
  return out;
}

// One line per result, e.g. "CMD a1 LOGIN atom:alice q:pw", "LIT a1 LOGIN", "LINE abc",
// "BAD a1 bad_escape", "BAD - line_too_long fatal".
std::string describe(const LexResult& r) {
  switch (r.status) {
    case LexStatus::need_more:
      return "NEED\n";
    case LexStatus::literal_wanted:
      return "LIT " + r.tag + " " + r.command.name + "\n";
    case LexStatus::response_line:
      return "LINE " + escape(r.line.reveal()) + "\n";
    case LexStatus::invalid:
      return "BAD " + (r.tag.empty() ? "-"s : r.tag) + " " + std::string(error_name(r.error)) +
             (r.fatal ? " fatal" : "") + "\n";
    case LexStatus::command: {
      std::string out = "CMD " + r.command.tag + " " + r.command.name;
      for (const auto& arg : r.command.args) {
        switch (arg.kind) {
          case ArgKind::atom:
            out += " atom:" + escape(arg.value.reveal());
            break;
          case ArgKind::quoted:
            out += " q:" + escape(arg.value.reveal());
            break;
          case ArgKind::literal:
            out += " lit:" + escape(arg.value.reveal());
            break;
          case ArgKind::list_begin:
            out += " (";
            break;
          case ArgKind::list_end:
            out += " )";
            break;
        }
      }
      return out + "\n";
    }
  }
  return "?\n";
}

struct Driver {
  LexerLimits limits;
  // Ask for a response line after "AUTHENTICATE x" without an initial response, as the state
  // machine does.
  bool sasl_lines = false;

  std::string run(const std::vector<std::string_view>& chunks) const {
    ImapLexer lexer(limits);
    std::string out;
    for (const auto chunk : chunks) {
      lexer.feed(chunk);
      for (;;) {
        const LexResult r = lexer.next();
        if (r.status == LexStatus::need_more) {
          break;
        }
        out += describe(r);
        if (sasl_lines && r.status == LexStatus::command && r.command.name == "AUTHENTICATE" &&
            r.command.args.size() == 1) {
          lexer.expect_response_line();
        }
      }
    }
    return out;
  }

  // The same transcript whole, split at every offset, and one byte at a time (STYLE.md §3.10).
  void expect_everywhere(std::string_view input, const std::string& expected) const {
    EXPECT_EQ(run({input}), expected) << "whole: " << escape(input);
    for (std::size_t i = 0; i <= input.size(); ++i) {
      EXPECT_EQ(run({input.substr(0, i), input.substr(i)}), expected)
          << "split at " << i << ": " << escape(input);
    }
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < input.size(); ++i) {
      bytes.push_back(input.substr(i, 1));
    }
    EXPECT_EQ(run(bytes), expected) << "byte by byte: " << escape(input);
  }
};

struct LexCase {
  const char* name;
  std::string input;
  std::string expected;
  LexerLimits limits = {};
  bool sasl_lines = false;
};

// gtest prints the case name instead of the struct's bytes.
void PrintTo(const LexCase& c, std::ostream* os) { *os << c.name; }

std::string case_name(const ::testing::TestParamInfo<LexCase>& param_info) {
  return param_info.param.name;
}

class LexerValid : public ::testing::TestWithParam<LexCase> {};

TEST_P(LexerValid, SameResultAtEverySplit) {
  const auto& c = GetParam();
  Driver{c.limits, c.sasl_lines}.expect_everywhere(c.input, c.expected);
}

INSTANTIATE_TEST_SUITE_P(
    Rfc9051, LexerValid,
    ::testing::Values(
        LexCase{"LoginAtoms", "a001 LOGIN SMITH SESAME\r\n",
                "CMD a001 LOGIN atom:SMITH atom:SESAME\n"},
        LexCase{"MixedCaseName", "a1 cApAbIlItY\r\n", "CMD a1 CAPABILITY\n"},
        LexCase{"TagCaseKept", "Ab.9 noop\r\n", "CMD Ab.9 NOOP\n"},
        LexCase{"QuotedWithEscapes", "A2 login \"fr\\\"ed\" \"a\\\\b c\"\r\n",
                "CMD A2 LOGIN q:fr\"ed q:a\\b c\n"},
        LexCase{"EmptyQuoted", "A3 LOGIN \"\" \"\"\r\n", "CMD A3 LOGIN q: q:\n"},
        LexCase{"SyncLiterals", "a3 LOGIN {5}\r\nsmith {6}\r\nsesame\r\n",
                "LIT a3 LOGIN\nLIT a3 LOGIN\nCMD a3 LOGIN lit:smith lit:sesame\n"},
        LexCase{"NonSyncLiterals", "a4 LOGIN {5+}\r\nsmith {6+}\r\nsesame\r\n",
                "CMD a4 LOGIN lit:smith lit:sesame\n"},
        LexCase{"LiteralHoldsLineBreaksAndSpecials", "a5 LOGIN {11+}\r\nab\r\n\"c\\d{1} x\r\n",
                "CMD a5 LOGIN lit:ab\\r\\n\"c\\d{1} atom:x\n"},
        LexCase{"LiteralHeaderWithBareLf", "a5 LOGIN {2+}\nab {1}\nc\n",
                "LIT a5 LOGIN\nCMD a5 LOGIN lit:ab lit:c\n"},
        LexCase{"EmptyLiterals", "a6 LOGIN {0}\r\n {0+}\r\n\r\n",
                "LIT a6 LOGIN\nCMD a6 LOGIN lit: lit:\n"},
        LexCase{"LiteralWithLeadingZeros", "a6 LOGIN {0003+}\r\nabc x\r\n",
                "CMD a6 LOGIN lit:abc atom:x\n"},
        LexCase{
            "Rfc2971Id",
            "a7 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music "
            "Limited\")\r\n",
            "CMD a7 ID ( q:name q:sodr q:version q:19.34 q:vendor q:Pink Floyd Music Limited )\n"},
        LexCase{"IdNil", "a8 ID NIL\r\n", "CMD a8 ID atom:NIL\n"},
        LexCase{"EmptyAndNestedLists", "a9 X () (a (b \"c\") {1+}\r\nd)\r\n",
                "CMD a9 X ( ) ( atom:a ( atom:b q:c ) lit:d )\n"},
        LexCase{"BareLfEndsLine", "b1 NOOP\nb2 LOGIN a b\n",
                "CMD b1 NOOP\nCMD b2 LOGIN atom:a atom:b\n"},
        LexCase{"Pipelined", "c1 CAPABILITY\r\nc2 LOGIN a b\r\nc3 LOGOUT\r\n",
                "CMD c1 CAPABILITY\nCMD c2 LOGIN atom:a atom:b\nCMD c3 LOGOUT\n"},
        LexCase{"Utf8InQuoted", "d1 LOGIN \"j\xc3\xb6rg\" pw\r\n",
                "CMD d1 LOGIN q:j\\xc3\\xb6rg atom:pw\n"},
        LexCase{"TagWithBracket", "t]1 NOOP\r\n", "CMD t]1 NOOP\n"},
        LexCase{"PostLoginSyntax", "e1 LIST \"\" *\r\ne2 FETCH 1:* (FLAGS BODY[])\r\n",
                "CMD e1 LIST q: atom:*\nCMD e2 FETCH atom:1:* ( atom:FLAGS atom:BODY[] )\n"},
        LexCase{"SaslIr", "f1 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\nf2 AUTHENTICATE PLAIN =\r\n",
                "CMD f1 AUTHENTICATE atom:PLAIN atom:AGFsaWNlAHB3\nCMD f2 AUTHENTICATE atom:PLAIN "
                "atom:=\n"},
        LexCase{"SaslResponseLines",
                "g1 AUTHENTICATE PLAIN\r\nAGFsaWNlAHB3\r\ng2 authenticate plain\n*\ng3 NOOP\r\n",
                "CMD g1 AUTHENTICATE atom:PLAIN\nLINE AGFsaWNlAHB3\nCMD g2 AUTHENTICATE "
                "atom:plain\nLINE *\nCMD g3 NOOP\n",
                LexerLimits{}, true},
        LexCase{"EmptySaslResponseLine", "g1 AUTHENTICATE PLAIN\r\n\r\n",
                "CMD g1 AUTHENTICATE atom:PLAIN\nLINE \n", LexerLimits{}, true},
        LexCase{"LiteralDataNotCountedInLine", "h1 LOGIN {40+}\r\n" + std::string(40, 'x') + "\r\n",
                "CMD h1 LOGIN lit:" + std::string(40, 'x') + "\n",
                LexerLimits{.max_line_bytes = 24, .max_literal_bytes = 40}},
        LexCase{"LineLimitIsPerLine", "i1 NOOP\r\ni2 NOOP\r\ni3 NOOP\r\n",
                "CMD i1 NOOP\nCMD i2 NOOP\nCMD i3 NOOP\n", LexerLimits{.max_line_bytes = 9}},
        LexCase{"ExactlyAtLimits", "j1 X a b {2+}\r\nab\r\n", "CMD j1 X atom:a atom:b lit:ab\n",
                LexerLimits{.max_line_bytes = 17, .max_literal_bytes = 2, .max_arguments = 3}}),
    case_name);

class LexerInvalid : public ::testing::TestWithParam<LexCase> {};

TEST_P(LexerInvalid, ReportedOnceThenRecovered) {
  const auto& c = GetParam();
  Driver{c.limits, c.sasl_lines}.expect_everywhere(c.input, c.expected);
}

// Each case ends with a valid command to show where lexing resumes (or, for fatal errors, that
// nothing more is read).
INSTANTIATE_TEST_SUITE_P(
    EachReason, LexerInvalid,
    ::testing::Values(
        LexCase{"EmptyLine", "\r\nz NOOP\r\n", "BAD - empty_line\nCMD z NOOP\n"},
        LexCase{"EmptyLineBareLf", "\nz NOOP\r\n", "BAD - empty_line\nCMD z NOOP\n"},
        LexCase{"TagWithPlus", "a+1 NOOP\r\nz NOOP\r\n", "BAD - bad_tag\nCMD z NOOP\n"},
        LexCase{"TagQuoted", "\"a\" NOOP\r\nz NOOP\r\n", "BAD - bad_tag\nCMD z NOOP\n"},
        LexCase{"TagWithStar", "a*1 NOOP\r\nz NOOP\r\n", "BAD - bad_tag\nCMD z NOOP\n"},
        LexCase{"LeadingSpace", " a NOOP\r\nz NOOP\r\n", "BAD - bad_tag\nCMD z NOOP\n"},
        LexCase{"TagOnly", "a1\r\nz NOOP\r\n", "BAD a1 missing_command_name\nCMD z NOOP\n"},
        LexCase{"TagAndSpace", "a1 \r\nz NOOP\r\n", "BAD a1 missing_command_name\nCMD z NOOP\n"},
        LexCase{"NameWithPercent", "a1 NO%P\r\nz NOOP\r\n",
                "BAD a1 bad_command_name\nCMD z NOOP\n"},
        LexCase{"NameQuoted", "a1 \"NOOP\"\r\nz NOOP\r\n", "BAD a1 bad_command_name\nCMD z NOOP\n"},
        LexCase{"CtlInAtom",
                "a1 LOGIN a\x01"
                "b c\r\nz NOOP\r\n",
                "BAD a1 bad_character\nCMD z NOOP\n"},
        LexCase{"EightBitInAtom", "a1 LOGIN \xc3\xa9 x\r\nz NOOP\r\n",
                "BAD a1 bad_character\nCMD z NOOP\n"},
        LexCase{"BraceInsideAtom", "a1 LOGIN ab{5}\r\nz NOOP\r\n",
                "BAD a1 bad_character\nCMD z NOOP\n"},
        LexCase{"DoubleSpace", "a1 LOGIN  a b\r\nz NOOP\r\n",
                "BAD a1 unexpected_character\nCMD z NOOP\n"},
        LexCase{"TrailingSpace", "a1 NOOP \r\nz NOOP\r\n",
                "BAD a1 unexpected_character\nCMD z NOOP\n"},
        LexCase{"AtomAfterQuoted", "a1 LOGIN \"a\"b c\r\nz NOOP\r\n",
                "BAD a1 unexpected_character\nCMD z NOOP\n"},
        LexCase{"SpaceBeforeClose", "a1 ID (a )\r\nz NOOP\r\n",
                "BAD a1 unexpected_character\nCMD z NOOP\n"},
        LexCase{"BadEscape", "a1 LOGIN \"a\\nb\" c\r\nz NOOP\r\n",
                "BAD a1 bad_escape\nCMD z NOOP\n"},
        LexCase{"UnterminatedQuoted", "a1 LOGIN \"abc\r\nz NOOP\r\n",
                "BAD a1 unterminated_quoted\nCMD z NOOP\n"},
        LexCase{"UnterminatedQuotedBareLf", "a1 LOGIN \"abc\\\nz NOOP\r\n",
                "BAD a1 unterminated_quoted\nCMD z NOOP\n"},
        LexCase{"NulInQuoted", "a1 LOGIN \"a\0b\" c\r\nz NOOP\r\n"s,
                "BAD a1 nul_byte\nCMD z NOOP\n"},
        LexCase{"NulInLiteral", "a1 LOGIN {3+}\r\na\0b c\r\nz NOOP\r\n"s,
                "BAD a1 nul_byte\nCMD z NOOP\n"},
        LexCase{"NulInLiteralDataSkippedWhole", "a1 LOGIN {9+}\r\n\0\r\ny NOOP c\r\nz NOOP\r\n"s,
                "BAD a1 nul_byte\nCMD z NOOP\n"},
        LexCase{"EmptyLiteralCount", "a1 LOGIN {}\r\nz NOOP\r\n",
                "BAD a1 bad_literal_header\nCMD z NOOP\n"},
        LexCase{"LetterInLiteralCount", "a1 LOGIN {5x}\r\nz NOOP\r\n",
                "BAD a1 bad_literal_header\nCMD z NOOP\n"},
        LexCase{"LetterAfterPlus", "a1 LOGIN {5+x}\r\nz NOOP\r\n",
                "BAD a1 bad_literal_header\nCMD z NOOP\n"},
        LexCase{"SpaceAfterLiteralHeader", "a1 LOGIN {5} \r\nz NOOP\r\n",
                "BAD a1 bad_literal_header\nCMD z NOOP\n"},
        LexCase{"LineEndsInLiteralHeader", "a1 LOGIN {5\r\nz NOOP\r\n",
                "BAD a1 bad_literal_header\nCMD z NOOP\n"},
        LexCase{"SyncLiteral2Pow40", "a1 LOGIN {1099511627776}\r\nz NOOP\r\n",
                "BAD a1 literal_too_large\nCMD z NOOP\n"},
        LexCase{"SyncLiteralOverCommandTotal", "a1 LOGIN {6+}\r\nabcdef {5}\r\nz NOOP\r\n",
                "BAD a1 literal_too_large\nCMD z NOOP\n", LexerLimits{.max_literal_bytes = 10}},
        LexCase{"NonSyncLiteral2Pow40Fatal", "a1 LOGIN {1099511627776+}\r\nxxxx\r\nz NOOP\r\n",
                "BAD a1 literal_too_large fatal\n"},
        LexCase{"TooManyArguments", "a1 X a b c d\r\nz NOOP\r\n",
                "BAD a1 too_many_arguments\nCMD z NOOP\n", LexerLimits{.max_arguments = 3}},
        LexCase{"ListOpenCountsAsArgument", "a1 X (a b c)\r\nz NOOP\r\n",
                "BAD a1 too_many_arguments\nCMD z NOOP\n", LexerLimits{.max_arguments = 3}},
        LexCase{"CloseWithoutOpen", "a1 ID )\r\nz NOOP\r\n",
                "BAD a1 unbalanced_parentheses\nCMD z NOOP\n"},
        LexCase{"ExtraClose", "a1 ID (a))\r\nz NOOP\r\n",
                "BAD a1 unbalanced_parentheses\nCMD z NOOP\n"},
        LexCase{"UnclosedList", "a1 ID (a\r\nz NOOP\r\n",
                "BAD a1 unbalanced_parentheses\nCMD z NOOP\n"},
        LexCase{"UnclosedListBareLf", "a1 ID (\"a\"\nz NOOP\r\n",
                "BAD a1 unbalanced_parentheses\nCMD z NOOP\n"},
        LexCase{"OpenAtEndOfLine", "a1 ID (\r\nz NOOP\r\n",
                "BAD a1 unbalanced_parentheses\nCMD z NOOP\n"},
        LexCase{"ListTooDeep", "a1 X (((a)))\r\nz NOOP\r\n", "BAD a1 list_too_deep\nCMD z NOOP\n",
                LexerLimits{.max_list_depth = 2}},
        LexCase{"CrWithoutLf", "a1 NOOP\rX\r\nz NOOP\r\n", "BAD a1 bare_cr\nCMD z NOOP\n"},
        LexCase{"CrWithoutLfInLiteralHeader", "a1 LOGIN {1}\rx\r\nz NOOP\r\n",
                "BAD a1 bare_cr\nCMD z NOOP\n"},
        LexCase{"OneByteOverLineLimit", "j1 X a b {2+}\r\nab\r\n", "BAD j1 line_too_long fatal\n",
                LexerLimits{.max_line_bytes = 16}},
        LexCase{"LineTooLongFatal", "a1 LOGIN " + std::string(40, 'a') + "\r\nz NOOP\r\n",
                "BAD a1 line_too_long fatal\n", LexerLimits{.max_line_bytes = 32}},
        LexCase{"LineTooLongBeforeTagEnds", std::string(40, 'a') + "\r\nz NOOP\r\n",
                "BAD - line_too_long fatal\n", LexerLimits{.max_line_bytes = 32}},
        LexCase{
            "SkippedLineTooLongFatal", "a1 LOGIN \"\\q" + std::string(40, 'a') + "\r\nz NOOP\r\n",
            "BAD a1 bad_escape\nBAD - line_too_long fatal\n", LexerLimits{.max_line_bytes = 32}},
        LexCase{"SaslLineTooLongFatal", "g1 AUTHENTICATE PLAIN\r\n" + std::string(40, 'A') + "\r\n",
                "CMD g1 AUTHENTICATE atom:PLAIN\nBAD - line_too_long fatal\n",
                LexerLimits{.max_line_bytes = 32}, true},
        LexCase{"NonSyncLiteralOnSkippedLineSkipped",
                "a1 LOGIN \"a\\q\" {8+}\r\nz NOOP\r\n c\r\ny NOOP\r\n",
                "BAD a1 bad_escape\nCMD y NOOP\n"},
        LexCase{"HugeNonSyncLiteralOnSkippedLineFatal",
                "a1 LOGIN \"a\\q\" {1099511627776+}\r\nz NOOP\r\n",
                "BAD a1 bad_escape\nBAD - literal_too_large fatal\n"},
        LexCase{"SyncLiteralOnSkippedLineNotAwaited", "a1 LOGIN \"a\\q\" {5}\r\nz NOOP\r\n",
                "BAD a1 bad_escape\nCMD z NOOP\n"}),
    case_name);

TEST(Lexer, SyncLiteral2Pow40RefusedBeforeItsLineEnds) {
  ImapLexer lexer;
  lexer.feed("a1 LOGIN {1099511627776}");
  const auto r = lexer.next();
  EXPECT_EQ(describe(r), "BAD a1 literal_too_large\n");
  EXPECT_EQ(lexer.buffered_bytes(), 0u);
  EXPECT_FALSE(lexer.dead());
}

TEST(Lexer, HugeLiteralCountDoesNotOverflow) {
  ImapLexer lexer;
  lexer.feed("a1 LOGIN {99999999999999999999999999999999999999}\r\n");
  EXPECT_EQ(describe(lexer.next()), "BAD a1 literal_too_large\n");
}

TEST(Lexer, MegabyteLineRefusedOnceOverTheLimit) {
  ImapLexer lexer;  // default limits: 8 KiB lines
  lexer.feed("a1 LOGIN ");
  EXPECT_EQ(lexer.next().status, LexStatus::need_more);
  const std::string chunk(4096, 'a');
  std::size_t fed = 9;
  std::size_t chunks = 0;
  LexResult r;
  while (r.status == LexStatus::need_more && chunks < 256) {
    lexer.feed(chunk);
    fed += chunk.size();
    ++chunks;
    r = lexer.next();
  }
  EXPECT_EQ(describe(r), "BAD a1 line_too_long fatal\n");
  EXPECT_EQ(chunks, 2u);  // 9 + 8192 > 8192
  EXPECT_GT(fed, 8192u);
  EXPECT_TRUE(lexer.dead());
  // The rest of the megabyte is dropped, not buffered.
  for (std::size_t i = chunks; i < 256; ++i) {
    lexer.feed(chunk);
    EXPECT_EQ(lexer.buffered_bytes(), 0u);
    EXPECT_EQ(lexer.next().status, LexStatus::need_more);
  }
}

TEST(Lexer, MegabyteInOneFeedIsCappedAndRefused) {
  ImapLexer lexer;
  lexer.feed("a1 LOGIN " + std::string(1 << 20, 'a'));
  EXPECT_LE(lexer.buffered_bytes(), LexerLimits{}.max_buffered_bytes);
  EXPECT_EQ(describe(lexer.next()), "BAD a1 line_too_long fatal\n");
  EXPECT_EQ(lexer.buffered_bytes(), 0u);
  EXPECT_EQ(lexer.next().status, LexStatus::need_more);
}

TEST(Lexer, TooMuchPipelinedInputIsFatalAfterWhatFits) {
  ImapLexer lexer(LexerLimits{.max_buffered_bytes = 32});
  std::string input;
  for (int i = 0; i < 8; ++i) {
    input += "a NOOP\r\n";
  }
  lexer.feed(input);
  EXPECT_TRUE(lexer.overflowed());
  std::string out;
  for (auto r = lexer.next(); r.status != LexStatus::need_more; r = lexer.next()) {
    out += describe(r);
  }
  EXPECT_EQ(out, "CMD a NOOP\nCMD a NOOP\nCMD a NOOP\nCMD a NOOP\nBAD - input_overflow fatal\n");
}

TEST(Lexer, ResetForgetsPartialLineAndBufferedBytes) {
  ImapLexer lexer;
  lexer.feed("a1 LOGIN {5}\r\n");
  EXPECT_EQ(lexer.next().status, LexStatus::literal_wanted);
  lexer.feed("ab");
  EXPECT_EQ(lexer.next().status, LexStatus::need_more);
  lexer.feed("c");
  lexer.reset();
  lexer.feed("b1 NOOP\r\n");
  EXPECT_EQ(describe(lexer.next()), "CMD b1 NOOP\n");
}

TEST(Lexer, ResetRevivesAfterFatalError) {
  ImapLexer lexer(LexerLimits{.max_line_bytes = 8});
  lexer.feed("a1 NOOP NOOP\r\n");
  EXPECT_TRUE(lexer.next().fatal);
  lexer.reset();
  lexer.feed("b1 X\r\n");
  EXPECT_EQ(describe(lexer.next()), "CMD b1 X\n");
}

TEST(Lexer, TakeBufferedReturnsPipelinedBytes) {
  ImapLexer lexer;
  lexer.feed("a1 LOGIN x y\r\na2 SELECT INBOX\r\na3 FET");
  EXPECT_EQ(describe(lexer.next()), "CMD a1 LOGIN atom:x atom:y\n");
  EXPECT_EQ(lexer.take_buffered(), "a2 SELECT INBOX\r\na3 FET");
  EXPECT_EQ(lexer.buffered_bytes(), 0u);
  EXPECT_EQ(lexer.next().status, LexStatus::need_more);
}

TEST(Lexer, RefusedLiteralStartsANewLine) {
  ImapLexer lexer;
  lexer.feed("a1 APPEND INBOX {10}\r\nb1 NOOP\r\n");
  EXPECT_EQ(describe(lexer.next()), "LIT a1 APPEND\n");
  lexer.refuse_literal();
  EXPECT_EQ(describe(lexer.next()), "CMD b1 NOOP\n");
}

TEST(Lexer, ResponseLineKeepsInnerCr) {
  ImapLexer lexer;
  lexer.feed("a1 AUTHENTICATE PLAIN\r\n");
  EXPECT_EQ(lexer.next().status, LexStatus::command);
  lexer.expect_response_line();
  lexer.feed("ab\rcd\r\n");
  EXPECT_EQ(describe(lexer.next()), "LINE ab\\rcd\n");
}

TEST(Lexer, ErrorTextsAreDistinct) {
  std::vector<std::string_view> seen;
  for (int e = static_cast<int>(LexError::none); e <= static_cast<int>(LexError::input_overflow);
       ++e) {
    const auto text = to_string(static_cast<LexError>(e));
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(text.find_first_of("\r\n"), std::string_view::npos);
    for (const auto other : seen) {
      EXPECT_NE(text, other);
    }
    seen.push_back(text);
  }
}

}  // namespace
}  // namespace iop::proxy
