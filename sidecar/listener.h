// Listener: one listening TCP socket (listen, or admin.listen). It accepts each waiting client
// into a new Session, hands that session to its owner and starts it; a failed accept (out of file
// descriptors, typically) is counted and logged at most once a second.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

namespace sidecar {

struct HostPort;
class Session;
struct SessionEnv;

class Listener {
public:
  // Where accepted sessions go: the Server, which owns every Session.
  class Owner {
  public:
    // A fresh id for the next session, unique among this process's sessions.
    virtual uint64_t next_session_id() = 0;
    // Takes a session whose socket is initialised. It is started or already closing; either
    // way its close callback frees it through SessionOwner::session_closed.
    virtual void adopt(std::unique_ptr<Session> s) = 0;

  protected:
    ~Owner() = default;
  };

  // Sessions made here are handed `env`; admin_only marks them as accepted on admin.listen.
  Listener(SessionEnv &env, Owner &owner, bool admin_only)
      : env_(env), owner_(owner), admin_only_(admin_only) {}
  Listener(const Listener &) = delete;
  Listener &operator=(const Listener &) = delete;

  // Binds and listens. On failure prints a config error that names `key` and its line, and
  // returns false.
  bool listen(const HostPort &addr, const std::string &key);
  // Stops accepting; idempotent.
  void close() noexcept;
  bool is_open() const noexcept { return open_; }

private:
  static void on_connection(uv_stream_t *server, int status);
  void accepted(int status);
  void accept_one();

  SessionEnv &env_;
  Owner &owner_;
  uv_tcp_t tcp_{};
  bool open_ = false;
  bool admin_only_;
  uint64_t failures_ = 0;
  uint64_t failure_logged_ms_ = 0;
};

} // namespace sidecar
