#pragma once
// Wiring: the long-lived services a command needs, built from the configuration.

#include <cstddef>
#include <memory>

#include "app/config.hpp"
#include "auth/token_endpoint.hpp"
#include "auth/token_service.hpp"
#include "common/asio.hpp"
#include "storage/audit_log.hpp"
#include "storage/audit_writer.hpp"
#include "storage/credentials_store.hpp"
#include "storage/token_cache.hpp"

namespace iop::app {

struct Services {
  // More than one refresh may hang at a time (several accounts due at once) without holding up
  // the next; each thread mostly waits on the network, so this is not bounded by the cores.
  static constexpr std::size_t http_threads = 6;

  explicit Services(Config c);
  ~Services();
  Services(const Services&) = delete;
  Services& operator=(const Services&) = delete;

  Config config;
  // Short local work runs here, never on an I/O thread: SQLite, Redis (bounded by its timeout),
  // password hashing, audit writes.
  net::thread_pool blocking{4};
  // Token-endpoint calls (libcurl, blocking for up to [oauth] http_timeout each) run on their
  // own pool: endpoint calls that hang can fill only this one, never delay a login that needs
  // no refresh (issue #7, item 6).
  net::thread_pool http{http_threads};
  // The connection log (keyed with the master key), for every command that writes or verifies
  // it: serve's sessions, the token and account events of every command.
  std::unique_ptr<storage::AuditLog> audit;
  // Its writer thread: sessions and token events only queue rows (issue #8). Destroyed (final
  // flush) before the log, after the pools have joined.
  std::unique_ptr<storage::AuditWriter> audit_writer;
  std::unique_ptr<storage::CredentialsStore> store;
  std::unique_ptr<storage::TokenCache> cache;  // null without [redis] url
  std::unique_ptr<auth::TokenEndpoint> endpoint;
  std::unique_ptr<auth::TokenService> tokens;
};

enum class KeyPolicy {
  create_if_new,  // create the master key when neither it nor the database exists yet
  must_exist,
};

// Opens the master key, the database and Redis (when configured) and builds the token service.
// A missing key for an existing database is an error, never a new key.
Result<std::unique_ptr<Services>> make_services(Config config,
                                                KeyPolicy key_policy = KeyPolicy::create_if_new);

// Queues a token or account event for `email` on the connection log's writer (written in the
// background; flushed when the services end). Never blocks, never fails the caller.
void record_event(Services& services, storage::AuditEvent event, const std::string& email,
                  std::string detail);

// The OAuth client settings of `config` (shared by the token service and the CLI).
auth::OAuthClientSettings oauth_client_settings(const Config& config);

// The same for one resolved provider (HTTP and retry settings from `config`).
auth::OAuthClientSettings oauth_client_settings(const Config& config,
                                                const auth::ResolvedProvider& provider);

// The provider profile of `row` with its tenant and client id applied.
Result<auth::ResolvedProvider> account_provider(const Config& config,
                                                const storage::Credentials& row);

// How the token service gets tokens for `row`: its provider's client, the account's own client
// credentials (secret or certificate) when it has them.
Result<auth::AccountClient> account_client(const Config& config, const storage::Credentials& row);

}  // namespace iop::app
