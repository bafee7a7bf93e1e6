// Server: listeners, the session table, fan-out of Redis messages, timers, signals and shutdown.
// Admission decides about upgrades (admission.cpp) and the Server applies its decision here; the
// HTTP endpoints are in endpoints.cpp.
#include "server.h"

#include <chrono>
#include <cstdio>
#include <random>

#include "client_messages.h"
#include "clock.h"
#include "cluster_bus.h"
#include "config_reload.h"
#include "guard.h"
#include "jwt.h"
#include "log.h"

namespace sidecar {
namespace {

template <typename T> Server *server_of(T *h) { return static_cast<Server *>(h->data); }

// How often the deadline timer fires: a few times per shortest timeout, as often as the sweep
// over every session used to run, so that deadlines are kept as closely as before.
uint64_t deadline_resolution_ms(const Config &cfg) {
  const WebSocketConfig &w = cfg.websocket;
  uint64_t shortest = std::min({w.heartbeat_ms, w.pong_timeout_ms, w.handshake_timeout_ms,
                                w.close_timeout_ms, uint32_t{4000}});
  return std::max<uint64_t>(20, shortest / 4);
}

void close_handle(void *h) {
  auto *handle = static_cast<uv_handle_t *>(h);
  if (!uv_is_closing(handle))
    uv_close(handle, nullptr);
}

} // namespace

Server::Server(uv_loop_t *loop, Config cfg)
    : loop_(loop), cfg_(std::make_unique<Config>(std::move(cfg))), proxies_(cfg_->trusted_proxies),
      read_buf_(new char[kReadBufferSize]), ping_frame_(SharedFrame::make(Opcode::ping, {})),
      bus_owner_(make_bus(loop, cfg_->redis, *this, cfg_->history)),
      presence_(loop, *bus_owner_, cfg_->presence), bus_(*bus_owner_),
      rooms_(bus_, metrics_.publish),
      timers_(uv_now(loop), deadline_resolution_ms(*cfg_)), env_{.loop = loop,
                                                                 .cfg = *cfg_,
                                                                 .metrics = metrics_,
                                                                 .rooms = rooms_,
                                                                 .flush = flush_,
                                                                 .timers = timers_,
                                                                 .writes = writes_,
                                                                 .owner = *this,
                                                                 .names = names_,
                                                                 .ping_frame = ping_frame_.get(),
                                                                 .read_buf = read_buf_.get(),
                                                                 .read_buf_size = kReadBufferSize,
                                                                 .jwt = jwt_},
      main_(env_, *this, false), admin_(env_, *this, true) {
  std::random_device rd;
  char buf[16];
  snprintf(buf, sizeof buf, "%08x", rd());
  instance_ = buf;
  start_control();
  // cfg_ is replaced in place on reload, so the rooms read the compression settings live.
  rooms_.enable_compression(cfg_->compression, metrics_.compression);
  if (!cfg_->history.empty()) {
    rooms_.enable_history(bus_, cfg_->history, metrics_.history);
    env_.history = &bus_;
    env_.replay = &replay_;
  }
  if (presence_.enabled())
    bus_.set_presence(&presence_);
}

Server::~Server() = default;

bool Server::start() {
  std::string err;
  if (cfg_->auth.mode == AuthConfig::Mode::jwt) {
    jwt_ = JwtVerifier::create(cfg_->auth.jwt, err);
    if (!jwt_) {
      fprintf(stderr, "%s: auth.jwt: %s\n", cfg_->file.c_str(), err.c_str());
      return false;
    }
  }
  if (!main_.listen(cfg_->listen_addr, "listen"))
    return false;
  if (cfg_->admin.listen_addr && !admin_.listen(*cfg_->admin.listen_addr, "admin.listen"))
    return false;
  int rc = uv_check_init(loop_, &check_);
  if (rc == 0)
    rc = uv_check_start(&check_, &Server::on_check);
  check_.data = this;
  if (rc == 0)
    rc = uv_timer_init(loop_, &deadlines_);
  deadlines_.data = this;
  // Each firing advances the wheel by the ticks that passed: the sessions due in them are
  // visited, and no other.
  uint64_t every = timers_.resolution_ms();
  if (rc == 0)
    rc = uv_timer_start(&deadlines_, &Server::on_deadlines, every, every);
  if (rc == 0)
    rc = uv_timer_init(loop_, &drain_);
  drain_.data = this;
  for (auto [sig, num] : {std::pair{&sigterm_, SIGTERM}, {&sigint_, SIGINT}, {&sighup_, SIGHUP}}) {
    if (rc == 0)
      rc = uv_signal_init(loop_, sig);
    sig->data = this;
    if (rc == 0)
      rc = uv_signal_start(sig, &Server::on_signal, num);
  }
  if (rc == 0)
    rc = presence_.start(instance_); // the sidecar id in presence fields
  if (rc == 0)
    rc = bus_.start();
  if (rc != 0) {
    fprintf(stderr, "sidecar: cannot start the event loop: %s\n", uv_strerror(rc));
    return false;
  }
  started_ms_ = last_summary_ms_ = now_ms();
  log_info("listening", {{"listen", cfg_->listen},
                         {"admin", cfg_->admin.listen.empty() ? "same" : cfg_->admin.listen},
                         {"redis", cfg_->redis.unix_path.empty()
                                       ? cfg_->redis.host + ":" + std::to_string(cfg_->redis.port)
                                       : cfg_->redis.unix_path},
                         {"version", SIDECAR_VERSION}});
  return true;
}

void Server::adopt(std::unique_ptr<Session> s) {
  uint64_t id = s->id();
  sessions_.emplace(id, std::move(s));
}

void Server::on_request(Session &s, const HttpRequest &req) {
  // Behind a trusted proxy the client is named by X-Forwarded-For; limits and status use it.
  if (!proxies_.empty())
    s.set_ip(proxies_.client_ip(s.ip(), req.header_list("x-forwarded-for")));
  if (s.admin_listener_ || is_endpoint(req.path)) {
    if (s.admin_listener_ || !cfg_->admin.listen_addr || is_public_endpoint(req.path)) {
      if (req.path == "/api/presence") {
        presence_endpoint(s, req);
        return;
      }
      HttpAnswer a = endpoint(req, s.admin_listener_);
      a.head_only = a.head_only || req.method == "HEAD";
      s.answer(a);
    } else {
      metrics_.count_refusal(404);
      s.answer(json_error(404, "NOT_FOUND", "admin endpoints are on admin.listen"));
    }
    return;
  }
  std::string org;
  const Route *route = match_route(cfg_->routes, req.path, org);
  if (route == nullptr) {
    metrics_.count_refusal(404);
    s.answer(json_error(404, "NOT_FOUND", "no route or endpoint at this path"));
    return;
  }
  std::string conn = connection_id(s); // outlives `ar`, which only views it
  AdmissionRequest ar{req, *route, org, s.ip(), conn, shutting_down_, now_ms(), unix_now()};
  apply(s, org, req.accepted_ns, admit(ar, *cfg_, jwt_.get(), {counts_, handshake_rates_}));
}

void Server::apply(Session &s, const std::string &org, uint64_t accepted_ns, Admission a) {
  if (!a.upgrade) {
    metrics_.count_refusal(a.answer.status);
    if (!a.auth_event.empty()) {
      log_info(a.auth_event, {{"conn", s.id()}, {"org", org}, {a.auth_field, a.auth_value}});
    }
    if (!a.code.empty()) {
      log_debug("refused",
                {{"conn", s.id()}, {"status", a.answer.status}, {"code", a.code}, {"ip", s.ip()}});
    }
    s.answer(a.answer);
    return;
  }
  // Interning may throw (out of memory): before the session is counted, so that the guard around
  // this request closes a session that nothing counts yet.
  SharedName org_name = names_.intern(a.grant.org);
  counts_.add(a.grant.org, a.grant.user, s.ip());
  s.counted_ = true;
  ++metrics_.connections_upgraded;
  metrics_.handshake_seconds.observe(static_cast<double>(mono_ns() - accepted_ns) / 1e9);
  log_debug("connect",
            {{"conn", s.id()}, {"org", a.grant.org}, {"user", a.grant.user}, {"ip", s.ip()}});
  s.in_presence_ = presence_.join(a.grant);
  s.upgrade(std::move(org_name), std::move(a.grant), a.welcome, std::move(a.resume),
            a.deflate ? &*a.deflate : nullptr, std::move(a.grants));
}

void Server::session_leaving(Session &s) noexcept {
  if (!s.counted_)
    return;
  s.counted_ = false;
  counts_.remove(s.org(), s.user(), s.ip());
  if (s.in_presence_) {
    s.in_presence_ = false;
    presence_.leave(s.room_channel(), s.user());
  }
}

void Server::session_closed(Session &s) {
  sessions_.erase(s.id());
  if (shutting_down_ && sessions_.empty())
    finish_shutdown();
}

void Server::on_check(uv_check_t *h) {
  guarded("server.flush", 0, "flushing again next turn", [&] { server_of(h)->flush_pending(); });
}

void Server::flush_pending() {
  replay_.clear(); // what this turn's reads replayed is queued by now
  if (flush_.empty())
    return;
  flush_.flush_all();
  if (turn_first_message_ns_ != 0) {
    metrics_.fanout_seconds.observe(static_cast<double>(mono_ns() - turn_first_message_ns_) / 1e9);
    turn_first_message_ns_ = 0;
  }
}

void Server::on_redis_message(std::string_view channel, std::string_view payload) {
  guarded("redis.message", 0, "this message is dropped", [&] {
    // The fan-out latency of a loop turn runs from its first routed message to the end of the
    // flush, so the clock is read before that message is framed and queued.
    if (turn_first_message_ns_ == 0 && rooms_.find(channel) != nullptr)
      turn_first_message_ns_ = mono_ns();
    rooms_.publish(channel, payload);
  });
}

void Server::on_redis_state(bool connected) {
  guarded("redis.state", 0, "nothing else", [&] {
    log_info(connected ? "redis_ready" : "redis_lost",
             {{"rooms", rooms_.size()}, {"sessions", sessions_.size()}});
  });
}

void Server::on_subscribed(std::string_view channel) {
  guarded("redis.subscribed", 0, "this room's history read waits for the next event",
          [&] { rooms_.on_subscribed(channel); });
}

void Server::on_subscription_lost(std::string_view channel) {
  guarded("redis.subscription_lost", 0, "this room is not told of the gap",
          [&] { rooms_.on_subscription_lost(channel); });
}

void Server::on_subscriber_reconnected() {
  guarded("redis.reconnected", 0, "rooms are not told of the outage",
          [&] { rooms_.on_subscriber_reconnected(); });
}

bool Server::forward_inbound(Session &s, std::string_view text) {
  std::string stream = expand_channel(cfg_->inbound.stream, s.org(), s.user());
  bool ok = bus_.xadd(stream, cfg_->inbound.maxlen,
                      {{"org", s.org()},
                       {"user", s.user()},
                       {"conn", connection_id(s)},
                       {"data", std::string(text)}});
  if (ok)
    ++metrics_.inbound_forwarded;
  return ok;
}

void Server::on_deadlines(uv_timer_t *t) {
  guarded("server.deadlines", 0, "trying again next time", [&] { server_of(t)->run_deadlines(); });
}

void Server::run_deadlines() {
  uint64_t now = now_ms();
  // tick() may close a session, but freeing happens in a close callback, never here. A session
  // whose tick throws is the one dropped; the others due go on.
  timers_.advance(now, [&](TimerWheel::Entry &e) {
    auto &s = static_cast<Session &>(e);
    guarded(
        "session.tick", s.id(), "closing this connection", [&] { s.tick(now); },
        [&] { s.abort("internal error"); });
  });
  if (cfg_->log.summary_interval_s != 0 &&
      now - last_summary_ms_ >= uint64_t{cfg_->log.summary_interval_s} * 1000) {
    last_summary_ms_ = now;
    log_summary();
  }
}

void Server::log_summary() {
  size_t open = 0;
  for (auto &[id, s] : sessions_)
    open += s->is_open() ? 1 : 0;
  log_info("summary", {{"connections", open},
                       {"rooms", rooms_.size()},
                       {"redis", bus_.connected() ? "up" : "down"},
                       {"messages_total", metrics_.publish.messages},
                       {"frames_total", metrics_.publish.frames},
                       {"slow_consumer_closes_total", metrics_.slow_consumer_closes}});
}

void Server::on_signal(uv_signal_t *h, int signum) {
  guarded("server.signal", 0, "the signal is ignored", [&] { server_of(h)->signalled(signum); });
}

void Server::signalled(int signum) {
  if (signum == SIGHUP) {
    reload();
  } else if (shutting_down_) {
    log_warn("shutdown_forced", {{"sessions", sessions_.size()}});
    fflush(stderr);
    _exit(0);
  } else {
    begin_shutdown();
  }
}

void Server::begin_shutdown() {
  shutting_down_ = true; // /ready answers 503 from now on
  log_info("shutdown_started",
           {{"sessions", sessions_.size()}, {"drain_timeout_ms", cfg_->shutdown.drain_timeout_ms}});
  // Only the main listener stops: the admin listener keeps answering /ready (503) while we drain.
  main_.close();
  std::uniform_int_distribution<uint32_t> jitter(0, cfg_->shutdown.reconnect_jitter_ms);
  for (auto &[id, s] : sessions_) {
    if (s->is_open()) {
      uint32_t after = cfg_->shutdown.reconnect_after_ms + jitter(rng_);
      s->send_json(server_shutdown_message(after));
      s->close(CloseCode::going_away, "server shutdown");
    } else if (s->phase() == Session::Phase::http) {
      // A client still sending its request gets the answer admission would give it, not a
      // dropped socket; the session closes once the answer is written, so the drain is short.
      metrics_.count_refusal(503);
      s->answer(json_error(503, "SHUTTING_DOWN", "this sidecar is shutting down"));
    } else {
      s->abort("server shutdown");
    }
  }
  if (sessions_.empty()) {
    finish_shutdown();
    return;
  }
  int rc = uv_timer_start(
      &drain_,
      [](uv_timer_t *t) {
        Server *self = server_of(t);
        guarded("server.drain", 0, "the sessions left close at exit", [&] {
          log_warn("drain_timeout", {{"sessions", self->sessions_.size()}});
          for (auto &[id, s] : self->sessions_)
            s->abort("drain timeout");
        });
      },
      cfg_->shutdown.drain_timeout_ms, 0);
  if (rc != 0) {
    // Without its deadline the drain could last forever; end it now rather than hang the exit.
    log_error("drain_timer_failed",
              {{"err", uv_err_name(rc)}, {"action", "closing every session now"}});
    for (auto &[id, s] : sessions_)
      s->abort("drain timer failed");
  }
}

void Server::finish_shutdown() {
  log_info("shutdown_complete", {});
  presence_.stop();
  bus_.stop();
  for (void *h : {static_cast<void *>(&check_), static_cast<void *>(&deadlines_),
                  static_cast<void *>(&drain_), static_cast<void *>(&sigterm_),
                  static_cast<void *>(&sigint_), static_cast<void *>(&sighup_)}) {
    close_handle(h);
  }
  main_.close();
  admin_.close();
}

void Server::reload() {
  ConfigResult r = load_config_file(cfg_->file, process_env());
  if (!r.ok()) {
    for (const auto &e : r.errors) {
      log_error("reload_rejected", {{"error", e.to_string()},
                                    {"action", "fix the file and send SIGHUP again; the old "
                                               "configuration stays in force"}});
    }
    return;
  }
  // What cannot change live keeps its running value; plan_reload decides and names it.
  ReloadPlan plan = plan_reload(*cfg_, std::move(r.config));
  std::unique_ptr<JwtVerifier> jwt;
  if (plan.config.auth.mode == AuthConfig::Mode::jwt) {
    std::string err;
    jwt = JwtVerifier::create(plan.config.auth.jwt, err);
    if (!jwt) {
      log_error("reload_rejected",
                {{"error", "auth.jwt: " + err}, {"action", "fix the keys and send SIGHUP again"}});
      return;
    }
  }
  // Sessions read config() on every use, so new limits apply from the next message on.
  *cfg_ = std::move(plan.config);
  jwt_ = std::move(jwt);
  proxies_ = TrustedProxies(cfg_->trusted_proxies);
  log_configure(cfg_->log.level, cfg_->log.format);
  // Timeouts apply at once: each session is scheduled again for its deadlines under the new
  // values (one pass per reload, not per second).
  uint64_t now = now_ms();
  for (auto &[id, s] : sessions_)
    s->schedule_deadline(now);
  log_info("reloaded", {{"not_applied_live", plan.not_applied_live()}});
}

} // namespace sidecar
