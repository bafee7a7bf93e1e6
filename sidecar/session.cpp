// Session; see session.h.
#include "session.h"

#include <chrono>
#include <cstring>

#include "client_messages.h"
#include "clock.h"
#include "config.h"
#include "encoding.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "room.h"
#include "session_resume.h"
#include "session_subscribe.h"

namespace sidecar {
namespace {

constexpr unsigned kMaxIov = 64;
// A User-Agent is kept for the status endpoint only; a stranger chooses its bytes and length.
constexpr size_t kMaxUserAgentBytes = 256;
constexpr std::string_view kInternalError = "internal error";

Session *session_of(uv_handle_t *h) { return static_cast<Session *>(h->data); }

std::string peer_ip(uv_tcp_t *tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr *>(&ss), &len) != 0)
    return "unknown";
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<sockaddr_in *>(&ss), buf, sizeof buf);
  } else {
    uv_ip6_name(reinterpret_cast<sockaddr_in6 *>(&ss), buf, sizeof buf);
  }
  return buf;
}

} // namespace

void FlushList::forget(const Session *s) noexcept {
  for (auto *list : {&pending_, &flushing_}) {
    for (auto &p : *list) {
      if (p == s)
        p = nullptr;
    }
  }
}

void FlushList::flush_all() noexcept {
  flushing_.swap(pending_);
  for (Session *s : flushing_) {
    if (s != nullptr)
      s->flush();
  }
  flushing_.clear();
}

std::unique_ptr<WriteRequest> WriteRequests::take() noexcept {
  if (free_.empty())
    return std::unique_ptr<WriteRequest>(new (std::nothrow) WriteRequest);
  std::unique_ptr<WriteRequest> r = std::move(free_.back());
  free_.pop_back();
  return r;
}

void WriteRequests::give_back(std::unique_ptr<WriteRequest> r) noexcept {
  if (free_.size() < kKeep)
    free_.push_back(std::move(r)); // within the reserved capacity: cannot throw
}

Session::Session(SessionEnv &env, uint64_t id) : env_(env), id_(id) {}

Session::~Session() { end_resume(); }

int Session::init(uv_loop_t *loop) {
  int rc = uv_tcp_init(loop, &tcp_);
  if (rc == 0) {
    handle_open_ = true;
    tcp_.data = this;
  }
  return rc;
}

void Session::start(uint64_t now_ms, uint64_t accepted_ns) {
  phase_since_ms_ = last_recv_ms_ = now_ms;
  ip_ = peer_ip(&tcp_);
  uv_tcp_nodelay(&tcp_, 1);
  http_ = std::make_unique<RequestParser>(env_.cfg.limits.max_header_bytes);
  http_->set_accepted_ns(accepted_ns);
  int rc = uv_read_start(stream(), &Session::on_alloc, &Session::on_read);
  if (rc != 0) {
    abort(uv_err_name(rc));
    return;
  }
  schedule_deadline(now_ms);
}

void Session::on_alloc(uv_handle_t *h, size_t, uv_buf_t *buf) {
  const SessionEnv &env = session_of(h)->env_;
  *buf = uv_buf_init(env.read_buf, static_cast<unsigned>(env.read_buf_size));
}

void Session::on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  Session *self = session_of(reinterpret_cast<uv_handle_t *>(s));
  guarded(
      "session.read", self->id_, "closing this connection",
      [&] {
        if (n > 0) {
          self->handle_read(buf->base, static_cast<size_t>(n));
        } else if (n < 0) {
          self->last_error_ = n == UV_EOF ? "eof" : uv_err_name(static_cast<int>(n));
          self->abort(self->last_error_);
        }
      },
      [&] { self->abort(kInternalError); });
}

void Session::handle_read(const char *data, size_t len) {
  last_recv_ms_ = env_.now_ms();
  if (awaiting_pong_) {
    // Any frame from the peer proves it is alive: the pong deadline gives way to the next ping.
    awaiting_pong_ = false;
    schedule_deadline(last_recv_ms_);
  }
  if (phase_ == Phase::http) {
    handle_http(data, len);
    return;
  }
  if (!ws_ || phase_ == Phase::gone)
    return;
  ws_->feed(reinterpret_cast<const uint8_t *>(data), len);
  if (ws_->state() == WsProtocol::State::done) {
    close_when_flushed_ = true;
    enter_closing(last_recv_ms_);
  } else if (ws_->state() == WsProtocol::State::closing) {
    enter_closing(last_recv_ms_);
  }
  request_flush();
}

void Session::handle_http(const char *data, size_t len) {
  if (!http_)
    return; // the answer is on its way; ignore anything else the client sends
  size_t used = 0;
  RequestParser::State st = http_->feed(data, len, used);
  if (st == RequestParser::State::need_more)
    return;
  if (st == RequestParser::State::error) {
    HttpAnswer a = http_->error_answer();
    env_.metrics.count_refusal(a.status);
    answer(a);
    return;
  }
  // The request is decided now; the parser (and the request it holds) lives only until this
  // function returns, whatever the server does with the session meanwhile.
  std::unique_ptr<RequestParser> parser = std::move(http_);
  const HttpRequest &req = parser->request();
  if (const std::string *ua = req.header("user-agent"))
    user_agent_ = env_.names.intern(sanitize_utf8(*ua, kMaxUserAgentBytes));
  env_.owner.on_request(*this, req);
  if (phase_ == Phase::open && used < len) {
    // The client's first frames came in the same read as its request.
    handle_read(data + used, len - used);
  }
}

void Session::answer(const HttpAnswer &a) noexcept {
  http_.reset();
  std::string bytes = serialize_answer(a);
  FrameRef f(SharedFrame::make_raw(bytes));
  if (f)
    out_.push(f.get());
  close_when_flushed_ = true;
  phase_ = Phase::closing;
  phase_since_ms_ = env_.now_ms();
  schedule_deadline(phase_since_ms_);
  uv_read_stop(stream());
  request_flush();
}

void Session::upgrade(SharedName org, UpgradeGrant grant, std::string_view welcome_json,
                      ResumeRequest resume, const DeflateAgreement *deflate,
                      std::vector<std::string> grants) noexcept {
  http_.reset(); // normally gone already: an upgraded session keeps no HTTP state
  org_ = std::move(org);
  user_ = std::move(grant.user);
  token_exp_ = grant.token_exp;
  v1_ = resume.v1;
  const Config &cfg = env_.cfg;
  if (cfg.subscriptions.enabled()) {
    try {
      subs_ = std::make_unique<SessionSubscriptions>();
      subs_->grants = std::move(grants);
    } catch (const std::exception &) {
      subs_.reset(); // out of memory: subscribe requests are refused as if none were allowed
    }
  }
  if (deflate != nullptr) {
    deflate_bits_ = deflate->server_window_bits & 0x0f;
    ++env_.metrics.compression.negotiated;
  }
  ws_.emplace(*this, cfg.limits.max_message_bytes, deflate ? deflate->client_window_bits : 0);
  std::string head = build_switching_protocols(grant.key, grant.protocol,
                                               deflate ? deflate->response : std::string_view{});
  FrameRef h(SharedFrame::make_raw(head));
  if (h)
    out_.push(h.get());
  phase_ = Phase::open;
  phase_since_ms_ = last_message_ms_ = ping_sent_ms_ = env_.now_ms(); // connected_at_ms()
  tokens_ = static_cast<float>(cfg.limits.inbound_burst);
  if (!join_rooms({&grant.room_channel, &grant.user_channel, &cfg.channels.broadcast}))
    return;
  // Joined first, so that what the rooms deliver while the reads are out is held, not missed.
  if (env_.history != nullptr && (v1_ || !resume.recover.empty()))
    start_resume(welcome_json, std::move(resume.recover));
  else if (v1_)
    send_v1_welcome(welcome_json, {});
  else
    send_json(welcome_json);
  schedule_deadline(last_message_ms_); // after start_resume, whose reads have a deadline too
}

bool Session::join_rooms(std::initializer_list<const std::string *> channels) noexcept {
  Rooms &rooms = env_.rooms;
  for (const std::string *ch : channels) {
    if (ch->empty() || rooms_.join(rooms, *ch, this, v1_, deflate_bits_ != 0))
      continue;
    // Out of memory beyond the inline memberships: a session that silently misses a channel is
    // worse than one that is told to come back.
    log_error("out_of_memory", {{"conn", id_}, {"channel", *ch}});
    close(CloseCode::internal_error, kInternalError);
    return false;
  }
  return true;
}

const std::string &Session::room_channel() const noexcept {
  static const std::string none;
  return rooms_.size() != 0 ? rooms_.room(0)->channel : none;
}

void Session::moved_in_room(Room *room, uint32_t slot) noexcept { rooms_.moved(room, slot); }

void Session::leave_rooms() noexcept {
  end_resume();
  rooms_.leave_all(env_.rooms, v1_, deflate_bits_ != 0);
}

void Session::deliver(SharedFrame *f) noexcept {
  // The pointer is tested here so that fan-out makes no call for a session that never resumed.
  if (resume_ != nullptr && resuming()) [[unlikely]] {
    hold(nullptr, {f, f, nullptr, false}, f); // behind the welcome, which waits for history
    return;
  }
  // A delivered message is counted only once it is queued; a refused one never was.
  if (queue(f))
    ++messages_out_;
}

void Session::deliver(Room *room, const Publication &p) noexcept {
  SharedFrame *plain = v1_ ? p.envelope : p.verbatim;
  SharedFrame *f = plain;
  // The room's one deflate of this publication for our window, or the plain frame when deflate
  // did not make it smaller.
  if (deflate_bits_ != 0 && p.deflated != nullptr && plain != nullptr) {
    if (SharedFrame *c = p.deflated->get(plain, deflate_bits_))
      f = c;
  }
  if (resume_ != nullptr) [[unlikely]] {
    if (!resume_->welcomed) {
      hold(room, p, f);
      return;
    }
    if (covered_by_read(room, p))
      return;
  }
  if (f != nullptr && queue(f) && !p.resync) {
    ++messages_out_;
    if (f != plain) {
      CompressionCounters &cc = env_.metrics.compression;
      ++cc.frames_queued;
      cc.bytes_saved += plain->size() - f->size();
    }
  }
}

bool Session::queue(SharedFrame *f) noexcept {
  if (phase_ != Phase::open)
    return false;
  if (out_.bytes() + f->size() > env_.cfg.limits.max_outbound_bytes || !out_.push(f)) {
    // Over budget: this client cannot keep up. Nothing is queued for it any more, and the close
    // happens in flush(), outside the fan-out loop that called us.
    over_budget_ = true;
    request_flush();
    return false;
  }
  request_flush();
  return true;
}

void Session::send_json(std::string_view json) noexcept {
  FrameRef f(SharedFrame::make(Opcode::text, json));
  if (f && phase_ != Phase::gone) {
    // The welcome is the first message a client gets, also when reads delay it: a reply to what
    // the client sent meanwhile (pong, error) waits behind it, in order with what rooms delivered.
    // A sidecar message, so `resync`: not counted as a delivered publication.
    if (resuming()) {
      Publication own;
      own.resync = true;
      hold(nullptr, own, f.get());
    } else {
      out_.push(f.get());
    }
  }
  request_flush();
}

void Session::send_error(std::string_view code, std::string_view message,
                         bool recoverable) noexcept {
  send_json(error_message(code, message, recoverable));
}

// The two WsHandler entries run inside wslay's callbacks, so nothing may unwind from them. The
// protocol object must outlive the callback: a failed message closes through wslay as the rate
// limit does, and failed output marks the session to be dropped once flushed, without wslay.
void Session::on_ws_message(Opcode op, const uint8_t *data, size_t len) {
  guarded(
      "session.ws_message", id_, "closing this connection with 1011",
      [&] { handle_ws_message(op, data, len); },
      [&] { close(CloseCode::internal_error, kInternalError); });
}

void Session::on_ws_output(const uint8_t *data, size_t len) {
  guarded(
      "session.ws_output", id_, "dropping this connection", [&] { take_ws_output(data, len); },
      [&] {
        close_when_flushed_ = true;
        enter_closing(env_.now_ms());
        request_flush();
      });
}

void Session::on_ws_inflate_error(Inflater::Status st) noexcept {
  auto i = static_cast<size_t>(st) - 1;
  CompressionCounters &cc = env_.metrics.compression;
  if (i < cc.inflate_errors.size())
    ++cc.inflate_errors[i];
  last_error_ = CompressionCounters::kInflateErrors[i < 3 ? i : 2];
}

void Session::take_ws_output(const uint8_t *data, size_t len) {
  // wslay hands a frame over as its header and then its payload, so the budget decision is made
  // once per frame, at its header, and the payload follows it. Pongs count against the same
  // budget as relayed messages: a client that floods pings and never reads must not grow our
  // memory either. A close frame is always let through.
  if (ws_out_left_ == 0 && len >= 2) {
    uint64_t payload = data[1] & 0x7f;
    size_t header = 2;
    if (payload == 126 && len >= 4) {
      payload = (uint64_t{data[2]} << 8) | data[3];
      header = 4;
    } else if (payload == 127 && len >= 10) {
      payload = 0;
      for (int i = 2; i < 10; ++i)
        payload = (payload << 8) | data[i];
      header = 10;
    }
    ws_out_left_ = static_cast<uint32_t>(header + payload);
    bool is_close = (data[0] & 0x0f) == 0x08;
    ws_out_drop_ = !is_close && out_.bytes() + ws_out_left_ > env_.cfg.limits.max_outbound_bytes;
    if (ws_out_drop_) {
      over_budget_ = true;
      request_flush();
    }
  }
  ws_out_left_ -= len < ws_out_left_ ? static_cast<uint32_t>(len) : ws_out_left_;
  if (ws_out_drop_)
    return;
  FrameRef f(SharedFrame::make_raw(std::string_view(reinterpret_cast<const char *>(data), len)));
  if (f)
    out_.push(f.get());
}

void Session::request_flush() noexcept {
  if (!pending_ && phase_ != Phase::gone) {
    pending_ = true;
    env_.flush.add(this);
  }
}

void Session::flush() noexcept {
  pending_ = false;
  if (phase_ == Phase::gone)
    return;
  if (over_budget_ && phase_ == Phase::open) {
    over_budget_ = false;
    ++env_.metrics.slow_consumer_closes;
    last_error_ = "slow consumer";
    log_info("slow_consumer", {{"conn", id_},
                               {"org", org_.str()},
                               {"queued_bytes", out_.bytes()},
                               {"action", "closing; raise limits.max_outbound_bytes if expected"}});
    // Keep only what a write in flight still references; the close frame goes right after.
    out_.truncate(write_ ? write_->frames : 0);
    // A configurable integer, 1008 or 1013 (config.cpp allows no other).
    close(static_cast<CloseCode>(env_.cfg.limits.slow_consumer_close_code), "slow consumer");
    return; // close() flushes again
  }
  if (write_ || out_.empty()) {
    if (!write_)
      after_drain();
    return;
  }
  ssize_t tried = out_.try_write(stream(), kMaxIov);
  if (tried < 0 && tried != UV_EAGAIN) {
    last_error_ = uv_err_name(static_cast<int>(tried));
    abort(last_error_);
    return;
  }
  size_t written = tried > 0 ? static_cast<size_t>(tried) : 0;
  out_.consume(written);
  bytes_out_ += written;
  env_.metrics.bytes_out += written;
  if (out_.empty()) {
    after_drain();
    return;
  }
  // The kernel buffer is full: hand the rest to libuv, which writes it when the socket drains.
  std::unique_ptr<WriteRequest> w = env_.writes.take();
  if (!w) {
    last_error_ = "out of memory";
    abort(last_error_);
    return;
  }
  uv_buf_t bufs[kMaxIov];
  unsigned n = out_.gather(bufs, kMaxIov);
  w->bytes = 0;
  for (unsigned i = 0; i < n; ++i)
    w->bytes += bufs[i].len;
  w->frames = n;
  w->req.data = this;
  int rc = uv_write(&w->req, stream(), bufs, n, &Session::on_write);
  if (rc != 0) {
    env_.writes.give_back(std::move(w));
    last_error_ = uv_err_name(rc);
    abort(last_error_);
    return;
  }
  write_ = std::move(w);
}

void Session::on_write(uv_write_t *req, int status) {
  auto *self = static_cast<Session *>(req->data);
  guarded(
      "session.write", self->id_, "closing this connection", [&] { self->write_done(status); },
      [&] { self->abort(kInternalError); });
}

void Session::write_done(int status) noexcept {
  size_t written = write_->bytes;
  env_.writes.give_back(std::move(write_));
  out_.consume(written);
  if (status < 0) {
    if (status != UV_ECANCELED) {
      last_error_ = uv_err_name(status);
      abort(last_error_);
    }
    return;
  }
  bytes_out_ += written;
  env_.metrics.bytes_out += written;
  request_flush();
}

void Session::after_drain() noexcept {
  if (close_when_flushed_ && out_.empty() && phase_ != Phase::gone) {
    abort("closed");
  }
}

void Session::enter_closing(uint64_t now_ms) noexcept {
  if (phase_ == Phase::closing || phase_ == Phase::gone)
    return;
  phase_ = Phase::closing;
  phase_since_ms_ = now_ms;
  schedule_deadline(now_ms);
  env_.owner.session_leaving(*this); // first: it reads the rooms still joined (room_channel)
  leave_rooms();
}

void Session::close(CloseCode code, std::string_view reason) noexcept {
  if (phase_ == Phase::gone)
    return;
  if (phase_ == Phase::http) {
    abort(reason);
    return;
  }
  // The reason goes into the close frame only: a closing session is no longer listed by the
  // status endpoint, the one reader of last_error().
  if (ws_ && ws_->state() == WsProtocol::State::open)
    ws_->close(wire_code(code), reason);
  if (!ws_ || ws_->state() == WsProtocol::State::done)
    close_when_flushed_ = true;
  enter_closing(env_.now_ms());
  request_flush();
}

void Session::abort(std::string_view reason) noexcept {
  if (phase_ == Phase::gone)
    return;
  if (phase_ == Phase::open || phase_ == Phase::closing)
    enter_closing(env_.now_ms());
  log_debug("disconnect", {{"conn", id_},
                           {"org", org_.str()},
                           {"reason", reason},
                           {"messages_out", messages_out_},
                           {"close_sent", ws_ ? ws_->close_code_sent() : 0},
                           {"close_received", ws_ ? ws_->close_code_received() : 0}});
  phase_ = Phase::gone;
  cancel(); // no deadline is left
  http_.reset();
  ws_.reset();
  if (handle_open_) {
    handle_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t *>(&tcp_), &Session::on_close);
  }
}

void Session::on_close(uv_handle_t *h) {
  Session *self = session_of(h);
  // Pending writes were cancelled before this callback, so nothing refers to us any more.
  guarded("session.close", self->id_, "the connection is closed already", [&] {
    self->out_.clear();
    if (self->pending_)
      self->env_.flush.forget(self);
    self->env_.owner.session_closed(*self);
  });
}

void Session::tick(uint64_t now) {
  check_deadlines(now);
  schedule_deadline(now);
}

void Session::schedule_deadline(uint64_t now) noexcept {
  uint64_t d = next_deadline(now);
  if (d == 0)
    cancel();
  else
    env_.timers.schedule(*this, d);
}

uint64_t Session::next_deadline(uint64_t now) const noexcept {
  const WebSocketConfig &ws = env_.cfg.websocket;
  switch (phase_) {
  case Phase::http:
    return phase_since_ms_ + ws.handshake_timeout_ms;
  case Phase::closing:
    return phase_since_ms_ + ws.close_timeout_ms;
  case Phase::gone:
    return 0;
  case Phase::open:
    break;
  }
  uint64_t d = awaiting_pong_ ? ping_sent_ms_ + ws.pong_timeout_ms
                              : std::max(ping_sent_ms_, last_recv_ms_) + ws.heartbeat_ms;
  if (resuming())
    d = std::min(d, resume_->started_ms + env_.cfg.redis.reply_timeout_ms);
  if (ws.idle_timeout_ms != 0)
    d = std::min(d, last_message_ms_ + ws.idle_timeout_ms);
  if (token_exp_ != 0) {
    // The token's deadlines are wall-clock seconds; the wheel runs on the loop clock, so they
    // are carried over as the time left. A wall clock that jumps is noticed at the next deadline
    // (a ping at the latest), as check_token_expiry reads the wall clock again.
    const AuthConfig &auth = env_.cfg.auth;
    int64_t wall = wall_ms();
    auto at = [&](int64_t unix_s) {
      int64_t left = unix_s * 1000 - wall;
      return now + (left > 0 ? static_cast<uint64_t>(left) : 0);
    };
    if (auth.on_expiry == AuthConfig::Expiry::close)
      d = std::min(d, at(token_exp_ + static_cast<int64_t>(auth.jwt.leeway_s)));
    if (!expiry_warned_)
      d = std::min(d, at(token_exp_ - static_cast<int64_t>(auth.expiry_warning_s)));
  }
  return d;
}

void Session::check_deadlines(uint64_t now) {
  const WebSocketConfig &ws = env_.cfg.websocket;
  switch (phase_) {
  case Phase::http:
    if (now - phase_since_ms_ >= ws.handshake_timeout_ms) {
      env_.metrics.count_refusal(408);
      abort("handshake timeout");
    }
    break;
  case Phase::open:
    // History reads that outlast redis.reply_timeout_ms (a room whose SUBSCRIBE Redis refuses,
    // a link that is down) end in resync unavailable rather than a welcome that never comes.
    if (resuming() && now - resume_->started_ms >= env_.cfg.redis.reply_timeout_ms) {
      for (size_t i = 0; resuming() && i < resume_->channels.size(); ++i) {
        if (!resume_->channels[i].done)
          finish_channel(i, nullptr);
      }
      welcome_when_done();
    }
    if (awaiting_pong_ && now - ping_sent_ms_ >= ws.pong_timeout_ms) {
      last_error_ = "pong timeout";
      ++env_.metrics.pong_timeouts;
      abort("pong timeout"); // a peer that does not answer will not read a close frame either
      return;
    }
    if (ws.idle_timeout_ms != 0 && now - last_message_ms_ >= ws.idle_timeout_ms) {
      close(CloseCode::normal, "idle timeout");
      return;
    }
    if (!awaiting_pong_ && now - ping_sent_ms_ >= ws.heartbeat_ms &&
        now - last_recv_ms_ >= ws.heartbeat_ms) {
      // Nothing came from the client for a whole heartbeat: an idle session, which gives back
      // a ring a burst left in its queue before the ping goes into it.
      if (!write_)
        out_.shrink();
      queue(env_.ping_frame); // a ping is not a delivered message, so it is not counted
      ping_sent_ms_ = now;
      awaiting_pong_ = true;
    }
    check_token_expiry();
    break;
  case Phase::closing:
    if (now - phase_since_ms_ >= ws.close_timeout_ms)
      abort("close timeout");
    break;
  case Phase::gone:
    break;
  }
}

} // namespace sidecar
