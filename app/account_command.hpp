#pragma once
// `account add` and `account reauth`: authorize an account with one of the flows (issue #6),
// check who signed in, and store the result through the token service's save path.

#include <chrono>
#include <string>

#include <CLI/CLI.hpp>

#include "app/cli_support.hpp"

namespace iop::app {

struct AuthorizeFlags {
  std::string email;
  // The flow; at most one. None on a terminal: ask.
  bool browser = false;
  bool paste = false;
  bool device_code = false;
  bool client_credentials = false;
  bool refresh_token_stdin = false;
  bool password_stdin = false;
  // Provider settings (empty: the account's current ones, or the default profile).
  std::string provider;
  std::string tenant;
  std::string client_id;
  bool client_secret_stdin = false;
  std::string client_certificate;  // a PEM file with the certificate and its private key
  std::string signed_in_as;        // shared mailboxes: who signs in
  bool local_password_stdin = false;
  bool generate_local_password = false;
  std::string upstream;  // host:port, the account's own upstream
  std::string timeout = "5m";
};

// Registers the flags of `add` / `reauth` on `cmd`.
void add_authorize_flags(CLI::App* cmd, AuthorizeFlags& flags);

// Runs `account add` (reauth = false) or `account reauth` (the account must exist).
int run_account_authorize(const AuthorizeFlags& flags, bool reauth, const Options& opts);

}  // namespace iop::app
