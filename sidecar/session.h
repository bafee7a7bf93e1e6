// Session: one client connection, from accept to close. It reads the HTTP request (llhttp via
// RequestParser), then either answers it and closes, or upgrades and speaks WebSocket (WsProtocol)
// while it is a member of its rooms (any number; three or fewer cost no heap). Everything it writes
// goes through its OutQueue.
//
// With history configured (issue 11) a session whose channels have history reads them before
// its welcome (session_resume.h, session_resume.cpp) and holds what its rooms deliver meanwhile.
//
// A session knows nothing of the Server. It is handed a SessionEnv (the config, counters, rooms,
// flush list and loop it shares with every other session) and decides its own timers, token
// expiry included. Only three things go up, through SessionOwner: a finished HTTP request (for
// admission), a client message to forward, and its leaving and closing. The fan-out path
// (Rooms -> deliver -> OutQueue) never goes up.
//
// Lifetime: the owner (the Server) owns every Session. close()/abort() may be called any number
// of times; the first call leaves the rooms and uv_closes the socket, and the socket's close
// callback asks the owner to free the session. A write callback still runs (UV_ECANCELED) before
// that.
#pragma once

#include <uv.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admission.h"
#include "clock.h"
#include "close_code.h"
#include "handshake.h"
#include "out_queue.h"
#include "room.h"
#include "shared_name.h"
#include "subscriptions.h"
#include "timer_wheel.h"
#include "ws_protocol.h"

namespace sidecar {

struct Config;
class JwtVerifier;
struct Metrics;
class Session;
class ReplayFrames;
struct SessionResume;
struct SessionSubscriptions;
struct ResumeFloor;
struct WelcomeChannel;

// What goes up from a session; the Server implements it. None of it is on the fan-out path.
class SessionOwner {
public:
  // A complete HTTP request: the owner decides and calls exactly one of s.answer() or
  // s.upgrade(). May throw; the session's read callback catches it (guard.h).
  virtual void on_request(Session &s, const HttpRequest &req) = 0;
  // A client message for the backend (inbound.stream is configured); false when it cannot be
  // queued.
  virtual bool forward_inbound(Session &s, std::string_view text) = 0;
  // The session stops being a live connection (it is closing): uncount it.
  virtual void session_leaving(Session &s) noexcept = 0;
  // The socket's close callback has run: nothing refers to s any more, and the owner frees it.
  // May throw (the last session of a shutdown ends it); the close callback catches it.
  virtual void session_closed(Session &s) = 0;

protected:
  ~SessionOwner() = default;
};

// Sessions with something to write, flushed once per loop turn (the Server's uv_check). A session
// is on it at most once (Session::pending_), and one that is freed is forgotten first.
class FlushList {
public:
  void add(Session *s) { pending_.push_back(s); }
  // Called before s is freed: it may be on the list being flushed, or on the next one.
  void forget(const Session *s) noexcept;
  bool empty() const noexcept { return pending_.empty(); }
  // Flushes every session on the list. Sessions that ask again meanwhile (a close does) land on
  // a fresh list for the next turn.
  void flush_all() noexcept;

private:
  std::vector<Session *> pending_;
  std::vector<Session *> flushing_;
};

// A uv_write_t and what the session must know when it completes. libuv needs one only while a
// write waits for the socket to drain, so sessions borrow one from WriteRequests instead of each
// carrying its ~200 bytes for life.
struct WriteRequest {
  uv_write_t req{};
  size_t bytes = 0;    // the bytes of the frames handed to uv_write
  unsigned frames = 0; // how many frames they span (the slow-consumer cut keeps them)
};

// The write requests not in use, kept for reuse up to a bound, so that a session whose socket
// keeps filling up does not allocate one per write.
class WriteRequests {
public:
  WriteRequests() { free_.reserve(kKeep); }
  // Null when out of memory.
  std::unique_ptr<WriteRequest> take() noexcept;
  void give_back(std::unique_ptr<WriteRequest> r) noexcept;

private:
  static constexpr size_t kKeep = 256;
  std::vector<std::unique_ptr<WriteRequest>> free_; // reserved: give_back never allocates
};

// What every session shares, owned by the Server and outliving its sessions. One reference per
// session: every idle connection pays for each byte of Session.
struct SessionEnv {
  uv_loop_t *loop;
  // Replaced in place by a reload, so sessions read it on every use and new limits apply from
  // the next message on.
  const Config &cfg;
  Metrics &metrics; // counted where the event happens
  Rooms &rooms;
  FlushList &flush;
  // Every session's next deadline; the Server advances it from a repeating timer.
  TimerWheel &timers;
  WriteRequests &writes;
  SessionOwner &owner;
  // The org and User-Agent strings that sessions share (one copy per distinct value).
  NameTable &names;
  SharedFrame *ping_frame; // one server ping, queued to every session that is due one
  // One read buffer for the whole loop: every read is consumed before the next one starts.
  char *read_buf;
  size_t read_buf_size;
  // Verifies in-band refreshes as admission verifies handshakes; null while auth is off. A reload
  // replaces the pointer it refers to, as it replaces cfg.
  const std::unique_ptr<JwtVerifier> &jwt;
  // History reads (issue 11); null when history is off, and then no session reads or holds.
  HistoryReads *history = nullptr;
  // Replay frames shared by the sessions that one read answers; null: each builds its own.
  ReplayFrames *replay = nullptr;

  uint64_t now_ms() const noexcept { return uv_now(loop); }
};

// A session is its own entry in env.timers (TimerWheel::Entry): scheduled for the earliest of its
// deadlines, and looked at only then.
class Session final : public WsHandler, public RoomMember, public TimerWheel::Entry {
public:
  enum class Phase : uint8_t { http, open, closing, gone };

  Session(SessionEnv &env, uint64_t id);
  ~Session();
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  int init(uv_loop_t *loop); // uv_tcp_init; the session is unusable if this fails
  uv_stream_t *stream() { return reinterpret_cast<uv_stream_t *>(&tcp_); }
  // Called once accepted (`accepted_ns`: monotonic, for the handshake latency, which the request
  // carries): records the peer address and starts reading.
  void start(uint64_t now_ms, uint64_t accepted_ns);

  // RoomMember, the fan-out entry point: queue a shared frame. Never closes, leaves a room or
  // frees anything on the spot; a session over its byte budget is marked and handled in flush().
  void deliver(SharedFrame *f) noexcept override;
  void deliver(Room *room, const Publication &p) noexcept override;
  void moved_in_room(Room *room, uint32_t slot) noexcept override;
  void room_ready(Room *room) noexcept override;
  // Sends what is queued: called once per loop turn for sessions that asked for it.
  void flush() noexcept;
  // Starts a WebSocket close (or ends an HTTP exchange); idempotent.
  void close(CloseCode code, std::string_view reason) noexcept;
  // Drops the connection now, without a closing handshake.
  void abort(std::string_view reason) noexcept;
  // Timers: handshake, heartbeat, pong, idle, close and token-expiry deadlines. Acts on those
  // that are due and schedules the session again for the next one. May throw; the timer that
  // calls it closes this one session if it does (guard.h).
  void tick(uint64_t now_ms);
  // Schedules the session in env.timers for the earliest deadline of its phase (none once gone).
  // The session does this itself whenever a deadline may have come nearer; a deadline that moved
  // further away (a message arrived) is found out when the old one fires. The Server calls it for
  // every session after a reload, whose timeouts apply at once.
  void schedule_deadline(uint64_t now_ms) noexcept;

  // The owner decides about a finished request and calls exactly one of these. With history
  // channels to read (`resume`), the welcome waits for the reads. `deflate`: the agreed
  // permessage-deflate, answered in the 101; only its window sizes are kept.
  void answer(const HttpAnswer &a) noexcept;
  // `org`: the grant's org from env.names, interned by the owner before it counted the session
  // (interning may throw; upgrading may not). `grants`: the channel patterns the client may
  // subscribe to (subscriptions configured).
  void upgrade(SharedName org, UpgradeGrant grant, std::string_view welcome_json,
               ResumeRequest resume = {}, const DeflateAgreement *deflate = nullptr,
               std::vector<std::string> grants = {}) noexcept;

  void send_json(std::string_view json) noexcept;

  uint64_t id() const { return id_; }
  Phase phase() const { return phase_; }
  bool is_open() const { return phase_ == Phase::open; }
  const std::string &org() const { return org_.str(); }
  const std::string &user() const { return user_; }
  int64_t token_exp() const { return token_exp_; } // unix seconds; 0: none
  bool v1() const { return v1_; }                  // takes sidecar.v1 envelopes
  // The grant's room channel, when it named one (in_presence_ implies it did): the first room
  // joined, which stays first (Memberships::leave moves only later entries); empty once the
  // session left its rooms.
  const std::string &room_channel() const noexcept;
  const std::string &ip() const { return ip_; }
  // Only before admission: the connection counts are keyed by it.
  void set_ip(std::string ip) { ip_ = std::move(ip); }
  const std::string &user_agent() const { return user_agent_.str(); }
  // Why the session failed ("eof", "pong timeout", a libuv error name), empty while it has not.
  std::string_view last_error() const { return last_error_ != nullptr ? last_error_ : ""; }
  // Wall clock of the upgrade, for the status endpoint; only while open.
  int64_t connected_at_ms() const {
    return wall_ms() - static_cast<int64_t>(env_.now_ms() - phase_since_ms_);
  }
  uint64_t messages_out() const { return messages_out_; }
  uint64_t bytes_out() const { return bytes_out_; }
  uint64_t messages_in() const { return messages_in_; }
  uint64_t queued_bytes() const { return out_.bytes(); }
  size_t queued_frames() const { return out_.frames(); }

private:
  static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
  static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
  static void on_write(uv_write_t *req, int status);
  static void on_close(uv_handle_t *h);

  // These may throw (a request reaches the whole server); the callback entries above and the
  // WsHandler overrides catch it there and close only this session (guard.h).
  void handle_read(const char *data, size_t len);
  void handle_http(const char *data, size_t len);
  void on_ws_message(Opcode op, const uint8_t *data, size_t len) override;
  void on_ws_output(const uint8_t *data, size_t len) override;
  void on_ws_inflate_error(Inflater::Status st) noexcept override;
  void handle_ws_message(Opcode op, const uint8_t *data, size_t len);
  void take_ws_output(const uint8_t *data, size_t len);
  // Queues f without counting it as a delivered message (pings, the sidecar's own frames);
  // false when the session is not open or f does not fit its byte budget.
  bool queue(SharedFrame *f) noexcept;
  void handle_client_text(std::string_view text);
  void send_error(std::string_view code, std::string_view message, bool recoverable) noexcept;
  // {"type":"refresh","token":…}: checked as at the handshake (check_refresh); a good token
  // moves the expiry deadline and re-arms its warning, a bad one leaves both as they were.
  void refresh_token(const std::string *token);
  // Warns once, auth.expiry_warning_s ahead, and closes with 4001 at expiry (plus the leeway)
  // when auth.on_expiry is close.
  void check_token_expiry();
  void check_deadlines(uint64_t now);
  // The earliest deadline of the current phase on the loop clock; 0 when there is none.
  uint64_t next_deadline(uint64_t now) const noexcept;
  // Joins each non-empty channel once; false (and the session closing with 1011) when a
  // membership cannot be stored.
  bool join_rooms(std::initializer_list<const std::string *> channels) noexcept;
  void leave_rooms() noexcept;
  // History (session_resume.cpp). start_resume sends the welcome itself when there is nothing
  // to read; the others run only while resume_ is set.
  // `only`: read just that room's channel (a subscribe); its answer is `welcome_json` then.
  void start_resume(std::string_view welcome_json, std::vector<RecoverRequest> recover,
                    Room *only = nullptr) noexcept;
  void ask_read(size_t channel, bool shared) noexcept;
  void read_done(size_t channel, const HistoryReadResult &r) noexcept;
  void finish_channel(size_t channel, const HistoryRead *read) noexcept;
  void hold(Room *room, const Publication &p, SharedFrame *f) noexcept;
  void welcome_when_done() noexcept;
  void end_resume() noexcept; // cancels reads still out; nothing is sent
  void send_v1_welcome(std::string_view welcome_json,
                       const std::vector<WelcomeChannel> &channels) noexcept;
  // True when p is a live message of `room` that this session's read covered (ResumeFloor).
  bool covered_by_read(const Room *room, const Publication &p) noexcept;
  SharedFrame *replay_frame(std::string_view channel, const HistoryRead &read, size_t i,
                            FrameRef &own) noexcept;
  // Subscriptions (session_subscribe.cpp): carried out at once, or after the welcome (or another
  // subscribe's read) the session is waiting on, in the order they came.
  void subscription(SubscriptionRequest req) noexcept;
  void apply_subscription(SubscriptionRequest &req) noexcept;
  void run_pending_subscriptions() noexcept;
  // A refreshed token's grants: channels they no longer allow are left ("revoked").
  void regrant(std::vector<std::string> grants) noexcept;
  void drop_revoked() noexcept;
  void enter_closing(uint64_t now_ms) noexcept;
  void request_flush() noexcept;
  void write_done(int status) noexcept;
  void after_drain() noexcept;

  // Every idle connection pays for each byte below (the sizeof bound in session_test.cpp):
  // what only one phase needs lives behind a pointer that is null in the others (http_, ws_'s
  // wslay context, resume_, write_), and the large members come first so that no padding follows.
  SessionEnv &env_;
  uint64_t id_;
  uv_tcp_t tcp_{};
  std::unique_ptr<WriteRequest> write_; // only while libuv holds a write; from env_.writes
  std::unique_ptr<RequestParser> http_; // freed after the request
  std::optional<WsProtocol> ws_;
  // Between an upgrade and a delayed welcome; after it, only while the rooms have not passed
  // the reads (SessionResume::welcomed, ResumeFloor).
  std::unique_ptr<SessionResume> resume_;
  std::unique_ptr<SessionSubscriptions> subs_; // null unless subscriptions are configured
  bool resuming() const noexcept;
  OutQueue out_;
  Memberships rooms_;
  // What the session keeps of its grant: the channels are the rooms' (rooms_), and the key and
  // subprotocol are spent on the 101 answer. The org and the User-Agent repeat across sessions,
  // so they are the table's (env_.names); a user or an address rarely does.
  SharedName org_;
  SharedName user_agent_;
  std::string user_;
  std::string ip_;
  // Static text only (string literals, uv_err_name), so that it costs a pointer.
  const char *last_error_ = nullptr;
  int64_t token_exp_ = 0; // unix seconds; 0: none

  // When the current phase began, on the loop clock: the accept while in http (handshake
  // timeout), the upgrade while open (connected_at_ms), the close once closing (close timeout).
  // The phases never overlap, so one field serves all three.
  uint64_t phase_since_ms_ = 0;
  uint64_t last_recv_ms_ = 0;
  // The last client message: for the idle timeout, and where the rate limiter's bucket was
  // last filled up to.
  uint64_t last_message_ms_ = 0;
  uint64_t ping_sent_ms_ = 0;
  uint64_t messages_out_ = 0;
  uint64_t bytes_out_ = 0;
  uint64_t messages_in_ = 0;

public:
  // Set by the listener and the Server; among the small fields, so that no padding follows them.
  bool counted_ = false;        // admitted into the server's connection counts
  bool admin_listener_ = false; // accepted on admin.listen: endpoints only
  bool pending_ = false;        // on the flush list
  bool in_presence_ = false;    // its room channel is counted by presence (issue 15)

private:
  // Bytes of the wslay frame being handed over still to come: wslay only writes control frames
  // (pong, close), at most 131 bytes.
  uint32_t ws_out_left_ = 0;
  // Inbound rate limiter: a token bucket (a float holds a burst of up to a million to well under
  // one token) and the messages refused meanwhile.
  float tokens_ = 0;
  uint32_t violations_ = 0;
  Phase phase_ = Phase::http;
  bool handle_open_ : 1 = false;
  bool over_budget_ : 1 = false;
  bool close_when_flushed_ : 1 = false;
  bool awaiting_pong_ : 1 = false;
  bool ws_out_drop_ : 1 = false; // the wslay frame being handed over is over budget
  bool expiry_warned_ : 1 = false;
  bool v1_ : 1 = false; // negotiated sidecar.v1: takes envelopes
  // The window we deflate with for this client (9..15) when it agreed permessage-deflate, else
  // 0. The client's window lives in ws_, which inflates.
  uint8_t deflate_bits_ : 4 = 0;
};

} // namespace sidecar
