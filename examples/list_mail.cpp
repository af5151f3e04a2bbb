// imap-oauth2-proxy-list-mail EMAIL [--config FILE]
//
// Lists the folders and the subjects of the newest 10 messages in INBOX of an account added
// with `imap-oauth2-proxy account add`, through the library (no proxy needs to run): the
// library finds the configuration like the command line, gets a token and logs in.

#include <imap_oauth2_proxy/client.hpp>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

// A quoted string (RFC 9051 §4.3) starting at text[pos], unescaped; pos ends after it.
std::string read_quoted(std::string_view text, std::size_t& pos) {
  std::string out;
  for (++pos; pos < text.size() && text[pos] != '"'; ++pos) {
    if (text[pos] == '\\' && pos + 1 < text.size()) {
      ++pos;
    }
    out += text[pos];
  }
  ++pos;
  return out;
}

// The mailbox name of `* LIST (flags) delimiter name`.
std::string list_mailbox(const imap_oauth2_proxy::UntaggedResponse& r) {
  if (!r.literals.empty()) {
    return r.literals.back();  // a name sent as a literal
  }
  std::string_view text = r.text;
  std::size_t pos = text.find(')');
  if (pos == std::string_view::npos || pos + 2 >= text.size()) {
    return {};
  }
  pos += 2;  // the delimiter: a quoted character or NIL
  if (text[pos] == '"') {
    read_quoted(text, pos);
  } else {
    pos = text.find(' ', pos);
  }
  if (pos == std::string_view::npos || pos + 1 >= text.size()) {
    return {};
  }
  ++pos;
  if (text[pos] == '"') {
    return read_quoted(text, pos);
  }
  return std::string(text.substr(pos));
}

// "Subject: a\r\n b\r\n\r\n" -> "a b" (header folding undone; encoded words left as they are).
std::string subject_of(std::string_view header) {
  std::string out;
  for (char c : header) {
    if (c != '\r' && c != '\n') {
      out += c;
    }
  }
  constexpr std::string_view name = "Subject:";
  if (out.size() >= name.size() &&
      std::equal(name.begin(), name.end(), out.begin(),
                 [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
    out.erase(0, name.size());
  }
  const auto first = out.find_first_not_of(" \t");
  return first == std::string::npos ? std::string() : out.substr(first);
}

int usage() {
  std::cerr << "usage: imap-oauth2-proxy-list-mail EMAIL [--config FILE]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  imap_oauth2_proxy::ConnectOptions options;
  std::string email;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      options.config_file = args[++i];
    } else if (args[i].starts_with("-") || !email.empty()) {
      return usage();
    } else {
      email = args[i];
    }
  }
  if (email.empty()) {
    return usage();
  }
  try {
    auto imap = imap_oauth2_proxy::get_imap_connection(email, options);

    const auto folders = imap.command(R"(LIST "" "*")");
    std::cout << "Folders of " << imap.account() << ":\n";
    for (const auto& r : folders.untagged) {
      if (r.text.starts_with("* LIST ")) {
        std::cout << "  " << list_mailbox(r) << "\n";
      }
    }

    const auto inbox = imap.command("EXAMINE INBOX");
    if (!inbox.ok()) {
      std::cerr << "EXAMINE INBOX: " << inbox.text << "\n";
      return 1;
    }
    long exists = 0;
    for (const auto& r : inbox.untagged) {
      if (r.text.ends_with(" EXISTS")) {
        exists = std::stol(r.text.substr(2));
      }
    }
    std::cout << "Newest messages in INBOX (" << exists << " in all):\n";
    if (exists > 0) {
      const long first = std::max(1L, exists - 9);
      const auto fetched =
          imap.command("FETCH " + std::to_string(first) + ":" + std::to_string(exists) +
                       " (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
      // Newest first: the server answers in ascending order.
      for (auto it = fetched.untagged.rbegin(); it != fetched.untagged.rend(); ++it) {
        if (it->text.find(" FETCH ") != std::string::npos && !it->literals.empty()) {
          std::cout << "  " << std::stol(it->text.substr(2)) << "  "
                    << subject_of(it->literals.front()) << "\n";
        }
      }
    }
    imap.logout();
    return 0;
  } catch (const imap_oauth2_proxy::Error& e) {
    std::cerr << "error (" << imap_oauth2_proxy::to_string(e.kind()) << "): " << e.what() << "\n";
    return 1;
  }
}
