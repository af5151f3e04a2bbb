#include "proxy/listener.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/host_port.hpp"
#include "proxy/smtp_session.hpp"

namespace iop::proxy {

std::atomic<int> Listener::active_{0};
std::atomic<std::uint64_t> Listener::next_id_{0};

Result<std::unique_ptr<Listener>> Listener::bind(net::io_context& ioc, const std::string& host,
                                                 int port, bool implicit_tls, SessionDeps deps,
                                                 ExecutorPicker pick, ListenerProtocol protocol) {
  boost::system::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  if (ec) {
    return fail(Errc::config_error,
                fmt::format("cannot listen on \"{}\": not an IP address", host));
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  tcp::acceptor acceptor(ioc);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return fail(Errc::config_error,
                fmt::format("cannot listen on {}: {}", format_host_port(host, port), ec.message()));
  }
  const int bound = acceptor.local_endpoint().port();
  const bool smtp = protocol == ListenerProtocol::submission;
  const std::string_view kind =
      smtp ? (implicit_tls ? "submissions" : "submission") : (implicit_tls ? "tls" : "starttls");
  ListenerInfo info{fmt::format("{}:{}", kind, format_host_port(host, bound)), implicit_tls,
                    protocol};
  auto listener = std::unique_ptr<Listener>(
      new Listener(std::move(acceptor), std::move(info), deps, std::move(pick)));
  listener->port_ = bound;
  return listener;
}

Listener::Listener(tcp::acceptor acceptor, ListenerInfo info, SessionDeps deps, ExecutorPicker pick)
    : pick_(std::move(pick)), acceptor_(std::move(acceptor)), info_(std::move(info)), deps_(deps) {}

awaitable<void> Listener::run() {
  spdlog::info("listening on {}", info_.name);
  // Accept failures come in episodes (EMFILE/ENFILE while descriptors are used up, ENOBUFS):
  // the waiting connection stays in the backlog, so the acceptor is ready again at once and a
  // retry loop would spin and log on every turn. Back off (100 ms doubling to 1 s) and log once
  // per episode, then once more when accepting works again.
  constexpr std::chrono::milliseconds first_pause{100};
  constexpr std::chrono::milliseconds longest_pause{1000};
  std::chrono::milliseconds pause_for{0};
  std::uint64_t failed_accepts = 0;
  for (;;) {
    boost::system::error_code ec;
    auto socket =
        co_await acceptor_.async_accept(pick_(), net::redirect_error(net::use_awaitable, ec));
    if (ec) {
      if (!acceptor_.is_open() || ec == net::error::operation_aborted) {
        break;
      }
      if (failed_accepts++ == 0) {
        const bool out_of_descriptors = ec == boost::system::errc::too_many_files_open ||
                                        ec == boost::system::errc::too_many_files_open_in_system;
        spdlog::warn("accept on {} failed: {}; retrying with a pause of up to {} ms{}", info_.name,
                     ec.message(), longest_pause.count(),
                     out_of_descriptors ? " (raise the open-file limit or lower [server] "
                                          "max_connections)"
                                        : "");
      }
      pause_for = pause_for.count() == 0 ? first_pause : std::min(pause_for * 2, longest_pause);
      net::steady_timer pause(co_await net::this_coro::executor);
      pause.expires_after(pause_for);
      co_await pause.async_wait(net::redirect_error(net::use_awaitable, ec));
      continue;
    }
    if (failed_accepts > 0) {
      spdlog::info("accept on {} works again after {} failed attempt(s)", info_.name,
                   failed_accepts);
      failed_accepts = 0;
      pause_for = std::chrono::milliseconds(0);
    }
    socket.set_option(tcp::no_delay(true), ec);
    const auto id = fmt::format("c{}", ++next_id_);
    const bool reject = active_.fetch_add(1) >= deps_.settings.max_connections;
    spdlog::debug("conn={} accepted on {}", id, info_.name);
    auto executor = socket.get_executor();
    auto session = info_.protocol == ListenerProtocol::submission
                       ? run_smtp_session(std::move(socket), deps_, info_, id, reject)
                       : run_session(std::move(socket), deps_, info_, id, reject);
    net::co_spawn(executor, std::move(session), [id](std::exception_ptr e) {
      --active_;
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("conn={} ended with an internal error: {}", id, ex.what());
        }
      }
    });
  }
  spdlog::info("stopped listening on {}", info_.name);
}

void Listener::stop() {
  net::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  });
}

}  // namespace iop::proxy
