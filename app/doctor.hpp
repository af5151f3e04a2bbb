#pragma once
// `imap-oauth2-proxy doctor [--format text|json]` (issue #6 §4): checks the configuration, the
// master key and database, Redis, every used token endpoint and upstream, the local server
// certificate, the listen ports and every account, one line (or JSON object) per check, each
// fail with its fix. Exit status 1 when any check failed, 0 otherwise.
//
// It changes nothing: it never creates the master key, the database or a certificate (a
// missing one is a fail whose fix is `imap-oauth2-proxy init`), and it opens the database only
// when it exists.

#include <string>

#include "app/cli_support.hpp"

namespace iop::app {

int run_doctor(const Options& opts, const std::string& format);

}  // namespace iop::app
