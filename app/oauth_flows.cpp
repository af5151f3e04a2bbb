#include "app/oauth_flows.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "app/cli_support.hpp"
#include "auth/device_flow.hpp"
#include "auth/http_client.hpp"
#include "auth/loopback_listener.hpp"
#include "auth/pkce.hpp"
#include "common/asio.hpp"
#include "common/duration.hpp"

extern char** environ;

namespace iop::app {

namespace {

Result<auth::TokenGrant> grant_error(const auth::TokenError& e, std::string_view what) {
  const auto error = auth::to_error(e);
  return fail(error.code, fmt::format("{} failed, nothing was stored: {}", what, error.message));
}

// The one-line reason of a failed sign-in, as the piece that failed worded it.
Result<auth::TokenGrant> sign_in_failed(const Error& e) {
  return fail(e.code, fmt::format("{}; nothing was stored", e.message));
}

// Waits `d` in small steps so that Ctrl-C is noticed at once. False when interrupted.
bool interruptible_sleep(std::chrono::milliseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
    if (InterruptGuard::interrupted()) {
      return false;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(100)));
  }
  return !InterruptGuard::interrupted();
}

// xdg-open in the background; its output would only clutter the terminal.
void open_in_browser(const std::string& url) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::string program = "xdg-open";
  std::string arg = url;
  char* argv[] = {program.data(), arg.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, "xdg-open", &actions, nullptr, argv, environ) != 0) {
    std::cerr << "(could not start xdg-open; open the address above yourself)\n";
  }
  posix_spawn_file_actions_destroy(&actions);
}

auth::FormFields code_redemption_fields(const Secret& code, const std::string& redirect_uri,
                                        const auth::PkcePair& pkce, const std::string& scope) {
  // RFC 6749 §4.1.3 with RFC 7636 §4.5's code_verifier.
  auth::FormFields fields;
  fields.emplace_back("grant_type", Secret(std::string_view("authorization_code")));
  fields.emplace_back("code", code);
  fields.emplace_back("redirect_uri", Secret(redirect_uri));
  fields.emplace_back("code_verifier", pkce.verifier);
  fields.emplace_back("scope", Secret(scope));
  return fields;
}

std::string sign_in_url(const FlowContext& ctx, const std::string& redirect_uri,
                        const std::string& state, const auth::PkcePair& pkce) {
  auth::AuthorizeRequest request;
  request.authorize_endpoint = ctx.provider.authorize_endpoint;
  request.client_id = ctx.provider.client_id;
  request.redirect_uri = redirect_uri;
  request.scope = ctx.provider.authorization_scope();
  request.state = state;
  request.code_challenge = pkce.challenge;
  request.login_hint = ctx.login_hint;
  request.extra = ctx.provider.authorize_params;
  return auth::authorize_url(request);
}

Result<void> needs_authorize_endpoint(const FlowContext& ctx, std::string_view flag) {
  if (ctx.provider.authorize_endpoint.empty()) {
    return fail(Errc::config_error,
                fmt::format("{}: provider '{}' has no authorize_endpoint ({} flow); use "
                            "--client-credentials for an app-only provider",
                            flag, ctx.provider.name, auth::to_string(ctx.provider.flow)));
  }
  return {};
}

}  // namespace

bool desktop_available() {
  for (const char* name : {"DISPLAY", "WAYLAND_DISPLAY"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
      return true;
    }
  }
  return false;
}

Result<auth::TokenGrant> run_browser_flow(const FlowContext& ctx) {
  IOP_TRY(needs_authorize_endpoint(ctx, "--browser"));
  net::io_context ioc;
  IOP_TRY_ASSIGN(auto listener, auth::LoopbackListener::open(ioc));
  const auto pkce = auth::make_pkce();
  const auto state = auth::make_state();
  const std::string redirect_uri = listener.redirect_uri();
  const std::string url = sign_in_url(ctx, redirect_uri, state, pkce);
  std::cout << "Sign in as " << ctx.login_hint << " in your browser:\n\n  " << url << "\n\n"
            << "Waiting for the browser to come back to " << redirect_uri << " (up to "
            << format_duration(ctx.timeout) << "; Ctrl-C cancels)\n"
            << std::flush;
  if (desktop_available()) {
    open_in_browser(url);
  }

  std::optional<Result<Secret>> code;
  net::co_spawn(ioc, listener.wait_for_code(state, ctx.timeout),
                [&code](std::exception_ptr e, Result<Secret> r) {
                  if (e) {
                    code = fail(Errc::internal, "the sign-in listener failed");
                  } else {
                    code = std::move(r);
                  }
                });
  while (!code && !ioc.stopped()) {
    if (InterruptGuard::interrupted()) {
      die_cancelled();
    }
    ioc.run_for(std::chrono::milliseconds(100));
  }
  if (!code) {
    return fail(Errc::internal, "the sign-in listener stopped without an answer");
  }
  if (!*code) {
    return sign_in_failed(code->error());
  }
  auto grant = ctx.endpoint.grant_once(
      ctx.client,
      code_redemption_fields(**code, redirect_uri, pkce, ctx.provider.authorization_scope()));
  if (!grant) {
    return grant_error(grant.error(), "redeeming the sign-in code");
  }
  return std::move(*grant);
}

Result<auth::TokenGrant> run_paste_flow(const FlowContext& ctx) {
  IOP_TRY(needs_authorize_endpoint(ctx, "--paste"));
  // Nothing listens: the browser is on another machine. The port only has to be one the app
  // registration accepts (Microsoft accepts any port on a localhost redirect URI); taking a
  // free one keeps the address from reaching some other local service if it is opened here.
  int port = 0;
  {
    net::io_context ioc;
    tcp::acceptor probe(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }
  const std::string redirect_uri = fmt::format("http://localhost:{}/", port);
  const auto pkce = auth::make_pkce();
  const auto state = auth::make_state();
  const std::string url = sign_in_url(ctx, redirect_uri, state, pkce);
  std::cout << "Open this address in a browser on any machine and sign in as " << ctx.login_hint
            << ":\n\n  " << url << "\n\n"
            << "The browser then ends on a page that does not load (" << redirect_uri
            << "?code=...).\nCopy that page's whole address from the address bar and paste it "
               "here.\n"
            << std::flush;
  // An empty line (an extra Enter) asks again rather than ending the sign-in.
  std::string line;
  for (;;) {
    std::cerr << "address: " << std::flush;
    if (!std::getline(std::cin, line)) {
      if (InterruptGuard::interrupted()) {
        die_cancelled();
      }
      return fail(Errc::invalid_argument,
                  "no address was pasted (standard input ended); nothing was stored");
    }
    if (line.find_first_not_of(" \t\r") != std::string::npos) {
      break;
    }
  }
  const Secret pasted(std::move(line));
  auto code = auth::parse_redirect(pasted.reveal(), redirect_uri, state);
  if (!code) {
    return sign_in_failed(code.error());
  }
  auto grant = ctx.endpoint.grant_once(
      ctx.client,
      code_redemption_fields(*code, redirect_uri, pkce, ctx.provider.authorization_scope()));
  if (!grant) {
    return grant_error(grant.error(), "redeeming the sign-in code");
  }
  return std::move(*grant);
}

Result<auth::TokenGrant> run_device_flow(const FlowContext& ctx) {
  if (ctx.provider.device_endpoint.empty()) {
    return fail(Errc::config_error,
                fmt::format("--device-code: provider '{}' has no device_endpoint; use --browser "
                            "or --paste",
                            ctx.provider.name));
  }
  // RFC 8628 §3.1: client_id and scope (a confidential client authenticates too, but the
  // device flow is for public clients; Microsoft takes no secret here).
  std::vector<std::pair<std::string, Secret>> fields;
  fields.emplace_back("client_id", Secret(ctx.provider.client_id));
  fields.emplace_back("scope", Secret(ctx.provider.authorization_scope()));
  auto response = auth::post_form(ctx.provider.device_endpoint, fields, ctx.client.http);
  if (!response) {
    return fail(response.error().code,
                fmt::format("the device endpoint {} cannot be reached: {}",
                            ctx.provider.device_endpoint, response.error().message));
  }
  const Secret body(std::move(response->body));
  auto device = auth::parse_device_authorization(response->status, body.reveal());
  if (!device) {
    return fail(
        device.error().code,
        fmt::format("device sign-in cannot start, nothing was stored: {}", device.error().message));
  }
  if (!device->message.empty()) {
    std::cout << device->message << "\n";
  } else {
    std::cout << "To sign in, open " << device->verification_uri
              << " in a browser and enter the code " << device->user_code << "\n";
  }
  std::cout << "Sign in as " << ctx.login_hint << ". Waiting (Ctrl-C cancels)...\n" << std::flush;

  const bool live = ::isatty(STDERR_FILENO) != 0;
  const auto started = std::chrono::steady_clock::now();
  const auto expires_at = started + device->expires_in;
  auto interval = device->interval;
  for (;;) {
    // Wait one interval, redrawing the countdown once a second on a terminal.
    const auto next_poll = std::chrono::steady_clock::now() + interval;
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(
          next_poll - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        break;
      }
      if (live) {
        const auto remaining = std::chrono::duration_cast<std::chrono::seconds>(
            expires_at - std::chrono::steady_clock::now());
        std::cerr << "\r"
                  << auth::countdown_line(*device, std::max(remaining, std::chrono::seconds(0)))
                  << "   " << std::flush;
      }
      if (!interruptible_sleep(std::min(left, std::chrono::milliseconds(1000)))) {
        if (live) {
          std::cerr << "\n";
        }
        die_cancelled();
      }
    }
    auth::FormFields poll;
    poll.emplace_back("grant_type",
                      Secret(std::string_view("urn:ietf:params:oauth:grant-type:device_code")));
    poll.emplace_back("device_code", device->device_code);
    auto grant = ctx.endpoint.grant_once(ctx.client, poll);
    if (grant) {
      if (live) {
        std::cerr << "\n";
      }
      return std::move(*grant);
    }
    const auto step = auth::next_device_step(grant.error(), interval);
    if (step.action != auth::DevicePollAction::keep_polling) {
      if (live) {
        std::cerr << "\n";
      }
      return fail(Errc::invalid_argument,
                  fmt::format("device sign-in failed, nothing was stored: {}", step.message));
    }
    if (step.interval != interval && !live) {
      std::cout << "the server asked to poll less often: every " << step.interval.count() << " s\n"
                << std::flush;
    }
    interval = step.interval;
    if (std::chrono::steady_clock::now() + interval > expires_at + std::chrono::seconds(30)) {
      // The endpoint should have said expired_token by now; do not poll forever.
      return fail(Errc::invalid_argument,
                  "the code expired before sign-in finished; nothing was stored: run the command "
                  "again");
    }
  }
}

Result<auth::TokenGrant> run_client_credentials_flow(const FlowContext& ctx) {
  auth::FormFields fields;
  fields.emplace_back("grant_type", Secret(std::string_view("client_credentials")));
  fields.emplace_back("scope", Secret(ctx.provider.scope));
  auto grant = ctx.endpoint.grant_once(ctx.client, std::move(fields));
  if (!grant) {
    return grant_error(grant.error(), "the client-credentials grant");
  }
  return std::move(*grant);
}

Result<auth::TokenGrant> run_refresh_token_import(const FlowContext& ctx,
                                                  const Secret& refresh_token) {
  if (!auth::plausible_token(refresh_token.reveal())) {
    return fail(Errc::invalid_argument,
                "the refresh token is empty or contains characters a token cannot have");
  }
  auto refresh = [&](const std::string& scope) {
    auth::FormFields fields;
    fields.emplace_back("grant_type", Secret(std::string_view("refresh_token")));
    fields.emplace_back("refresh_token", refresh_token);
    fields.emplace_back("scope", Secret(scope));
    return ctx.endpoint.grant_once(ctx.client, std::move(fields));
  };
  // Asked with the identity scope first, so that the answer names whose token it is (an
  // id_token, OpenID Connect Core §12.2) and the caller can refuse another user's. A token
  // granted without openid may be refused that scope (Microsoft: AADSTS70000 or 65001; RFC 6749
  // §5.2 invalid_scope), which spends nothing: then once more without it.
  auto grant = refresh(ctx.provider.identity_scope.empty()
                           ? ctx.provider.scope
                           : ctx.provider.scope + " " + ctx.provider.identity_scope);
  if (!grant && !ctx.provider.identity_scope.empty() &&
      (grant.error().error == "invalid_scope" || grant.error().aadsts == 70000 ||
       grant.error().aadsts == 65001 || grant.error().aadsts == 70011)) {
    grant = refresh(ctx.provider.scope);
  }
  if (!grant) {
    const auto error = auth::to_error(grant.error());
    return fail(error.code, fmt::format("the refresh token did not work, nothing was stored: {}",
                                        error.message));
  }
  return std::move(*grant);
}

}  // namespace iop::app
