// Server: owns the listeners, every Session, the Rooms, the Redis bus and the loop's timers and
// signal handlers. It is the one place where a request becomes an upgrade or an answer; a Redis
// message goes straight to Rooms::publish, and from there down to the sessions without coming
// back here. Sessions and listeners reach it only through SessionOwner and Listener::Owner.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "admission.h"
#include "client_ip.h"
#include "config.h"
#include "handshake.h"
#include "listener.h"
#include "metrics.h"
#include "presence_sync.h"
#include "redis_bus.h"
#include "room.h"
#include "session.h"
#include "session_resume.h"

namespace sidecar {

class JwtVerifier;
struct ControlCommand;

class Server final : public RedisSink, public SessionOwner, public Listener::Owner {
public:
  Server(uv_loop_t *loop, Config cfg);
  ~Server();
  Server(const Server &) = delete;
  Server &operator=(const Server &) = delete;

  // Binds and starts everything. On failure prints what is wrong and returns false.
  bool start();

  // SessionOwner: what goes up from a session.
  void on_request(Session &s, const HttpRequest &req) override;
  bool forward_inbound(Session &s, std::string_view text) override;
  void session_leaving(Session &s) noexcept override;
  void session_closed(Session &s) override;

  // Listener::Owner: the sessions the listeners accept.
  uint64_t next_session_id() override { return next_id_++; }
  void adopt(std::unique_ptr<Session> s) override;

  // RedisSink; entered from hiredis callbacks, so nothing unwinds out of these (guard.h).
  void on_redis_message(std::string_view channel, std::string_view payload) override;
  void on_redis_state(bool connected) override;
  void on_subscribed(std::string_view channel) override;
  void on_subscriber_reconnected() override;
  void on_subscription_lost(std::string_view channel) override;
  void on_control_message(std::string_view payload) override;
  void on_connection_message(std::string_view channel, std::string_view payload) override;

private:
  static constexpr size_t kReadBufferSize = 64 * 1024;
  static void on_check(uv_check_t *h);
  static void on_deadlines(uv_timer_t *t);
  static void on_signal(uv_signal_t *h, int signum);
  void signalled(int signum);
  void flush_pending();
  void run_deadlines(); // sessions whose deadline came, then the periodic summary
  void begin_shutdown();
  void finish_shutdown();
  void reload();

  // Applies admission's decision (admission.h) to a session: answers it, or counts and upgrades it.
  // `accepted_ns`: when the connection was accepted (HttpRequest), for the handshake latency.
  void apply(Session &s, const std::string &org, uint64_t accepted_ns, Admission a);
  // Endpoints (endpoints.cpp).
  bool is_endpoint(std::string_view path) const;
  bool is_public_endpoint(std::string_view path) const;
  HttpAnswer endpoint(const HttpRequest &req, bool admin_listener);
  HttpAnswer status_endpoint(const HttpRequest &req);
  // GET /api/presence?channel=: answered later, from the Redis read, unless refused at once.
  void presence_endpoint(Session &s, const HttpRequest &req);
  HttpAnswer config_endpoint(const HttpRequest &req);
  std::string ready_reason() const;
  std::string degraded_reason() const; // ready, but some rooms cannot receive
  void log_summary();
  // Control commands and connection channels (server_control.cpp).
  void start_control(); // hands the bus the control channel and the connection pattern
  void apply_control(const ControlCommand &cmd);
  std::string connection_id(const Session &s) const; // as the welcome and inbound entries say
  Session *find_connection(std::string_view id);     // an open session of this sidecar, or null
  uint64_t now_ms() const { return uv_now(loop_); }

  uv_loop_t *loop_;
  std::unique_ptr<Config> cfg_;
  std::unique_ptr<JwtVerifier> jwt_;
  TrustedProxies proxies_;
  std::unique_ptr<char[]> read_buf_;
  FrameRef ping_frame_;
  Metrics metrics_; // before rooms_, which counts into it
  // A RedisBus, or a ClusterBus when redis.cluster is set (make_bus); everything else in the
  // Server speaks to it as a MessageBus. Made before presence_, which keeps a reference to it;
  // destroyed after presence_, which is safe because a stopped bus calls nobody.
  std::unique_ptr<MessageBus> bus_owner_;
  PresenceSync presence_;
  MessageBus &bus_;
  Rooms rooms_;
  FlushList flush_;
  TimerWheel timers_;    // every session's next deadline, advanced by deadlines_
  WriteRequests writes_; // uv_write_t requests lent to sessions while a write is pending
  NameTable names_;      // orgs and User-Agents, shared by sessions (declared before sessions_)
  ReplayFrames replay_;  // cleared every loop turn (flush_pending)
  SessionEnv env_;       // what every session is handed: the members above, and this Server
  Listener main_;
  Listener admin_;
  uv_check_t check_{};
  uv_timer_t deadlines_{};
  uv_timer_t drain_{};
  uv_signal_t sigterm_{}, sigint_{}, sighup_{};
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;
  uint64_t next_id_ = 1;
  std::string instance_;                  // random prefix of connection ids, unique across sidecars
  std::string conn_prefix_, conn_suffix_; // channels.connection around {conn}
  uint64_t last_control_warn_ms_ = 0;     // refused commands warn once a second at most
  std::mt19937 rng_{std::random_device{}()}; // reconnect jitter
  bool shutting_down_ = false;
  uint64_t last_summary_ms_ = 0;
  uint64_t started_ms_ = 0;
  uint64_t turn_first_message_ns_ = 0; // first Redis message since the last flush, for latency

  // What admission reads: the admitted connections, and the handshake rate per address.
  ConnectionCounts counts_;
  HandshakeRates handshake_rates_;
};

} // namespace sidecar
