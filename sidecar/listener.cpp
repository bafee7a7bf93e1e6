// Listener; see listener.h.
#include "listener.h"

#include <cstdio>

#include "clock.h"
#include "config.h"
#include "guard.h"
#include "log.h"
#include "session.h"

namespace sidecar {

bool Listener::listen(const HostPort &addr, const std::string &key) {
  sockaddr_storage ss{};
  int rc = addr.host.find(':') != std::string::npos
               ? uv_ip6_addr(addr.host.c_str(), addr.port, reinterpret_cast<sockaddr_in6 *>(&ss))
               : uv_ip4_addr(addr.host == "localhost" ? "127.0.0.1" : addr.host.c_str(), addr.port,
                             reinterpret_cast<sockaddr_in *>(&ss));
  if (rc == 0)
    rc = uv_tcp_init(env_.loop, &tcp_);
  if (rc == 0) {
    open_ = true;
    tcp_.data = this;
    rc = uv_tcp_bind(&tcp_, reinterpret_cast<sockaddr *>(&ss), 0);
  }
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t *>(&tcp_), 4096, &Listener::on_connection);
  if (rc != 0) {
    const Config &cfg = env_.cfg;
    auto line = cfg.key_lines.find(key);
    ConfigError e{cfg.file, line == cfg.key_lines.end() ? 0 : line->second, key,
                  std::string("cannot listen on ") + addr.host + ":" + std::to_string(addr.port) +
                      ": " + uv_strerror(rc) + " (" + uv_err_name(rc) + ")" +
                      (rc == UV_EADDRINUSE ? "; is another sidecar running on this port?" : "")};
    fprintf(stderr, "%s\n", e.to_string().c_str());
    return false;
  }
  return true;
}

void Listener::close() noexcept {
  if (open_) {
    open_ = false;
    uv_close(reinterpret_cast<uv_handle_t *>(&tcp_), nullptr);
  }
}

void Listener::on_connection(uv_stream_t *server, int status) {
  auto *self = static_cast<Listener *>(server->data);
  guarded("server.accept", 0, "this client is dropped", [&] { self->accepted(status); });
}

void Listener::accepted(int status) {
  if (status < 0) {
    // Out of file descriptors, this repeats for every waiting client: one line a second.
    ++failures_;
    uint64_t now = env_.now_ms();
    if (now - failure_logged_ms_ >= 1000) {
      failure_logged_ms_ = now;
      log_warn("accept_failed", {{"err", uv_err_name(status)},
                                 {"failures_total", failures_},
                                 {"action", "raise the open-file limit (ulimit -n) or "
                                            "limits.max_connections, or add sidecars"}});
    }
    return;
  }
  accept_one();
}

void Listener::accept_one() {
  auto s = std::make_unique<Session>(env_, owner_.next_session_id());
  if (s->init(env_.loop) != 0)
    return;
  if (uv_accept(reinterpret_cast<uv_stream_t *>(&tcp_), s->stream()) != 0) {
    s->abort("accept failed");
    owner_.adopt(std::move(s)); // freed by its close callback
    return;
  }
  ++env_.metrics.connections_accepted;
  s->admin_listener_ = admin_only_;
  Session &raw = *s;
  owner_.adopt(std::move(s));
  raw.start(env_.now_ms(), mono_ns());
}

} // namespace sidecar
