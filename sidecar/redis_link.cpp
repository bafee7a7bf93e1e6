// RedisLink and RedisReplies; see redis_link.h.
#include "redis_link.h"

#include <hiredis/hiredis.h>

#include <cstring>
#include <random>
#include <vector>

#include "guard.h"
#include "log.h"

namespace sidecar {
namespace {

// Bytes handed to uv_write and not yet written. Past this the link is dead as far as we are
// concerned: Redis is not reading, and every byte more is memory spent on a lost cause. Large
// enough for a few inbound messages of the largest size limits.max_message_bytes allows.
constexpr size_t kMaxQueuedWriteBytes = 64u << 20;

// Redis replies arrive in up to this much per read; one buffer per connection, reused.
constexpr size_t kReadBufferSize = 64 * 1024;

// TCP keepalive after this much idle time: a second opinion from the kernel, and it keeps NAT
// state fresh when redis.ping_interval_ms is long.
constexpr unsigned kKeepaliveDelayS = 30;

struct ReplyFree {
  void operator()(redisReply *r) const { freeReplyObject(r); }
};

// hiredis 0.14 allocates an array's element table up front from the count the peer declares, so
// "*2147483647\r\n" alone asks for 16 GiB. No reply we ask for has more than a handful of
// elements; a larger count is refused, which hiredis reports as a protocol error, and the link is
// dropped and reconnected like any other broken link (hiredis 1.x has maxelements for this).
constexpr int kMaxReplyElements = 1 << 20;

redisReplyObjectFunctions *capped_reply_functions() {
  static redisReplyObjectFunctions fns = [] {
    redisReader *probe = redisReaderCreate();
    redisReplyObjectFunctions copy = *probe->fn;
    redisReaderFree(probe);
    return copy;
  }();
  static void *(*create_array)(const redisReadTask *, int) = fns.createArray;
  fns.createArray = [](const redisReadTask *task, int elements) -> void * {
    return elements > kMaxReplyElements ? nullptr : create_array(task, elements);
  };
  return &fns;
}

std::string_view text_of(const redisReply *r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}

enum class Push { no, message, malformed };

// A pub/sub push: ["message", channel, payload], ["smessage", channel, payload] or
// ["pmessage", pattern, channel, payload]. Fills channel and payload, and pattern for a pmessage
// (empty for the others).
Push classify(const redisReply &r, std::string_view &pattern, std::string_view &channel,
              std::string_view &payload) {
  if (r.type != REDIS_REPLY_ARRAY || r.elements < 1 || r.element[0]->type != REDIS_REPLY_STRING)
    return Push::no;
  std::string_view kind = text_of(r.element[0]);
  size_t first;
  if ((kind == "message" || kind == "smessage") && r.elements == 3)
    first = 1;
  else if (kind == "pmessage" && r.elements == 4)
    first = 2;
  else if (kind == "message" || kind == "smessage" || kind == "pmessage")
    return Push::malformed;
  else
    return Push::no;
  const redisReply *c = r.element[first];
  const redisReply *p = r.element[first + 1];
  if (c->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_STRING)
    return Push::malformed;
  if (first == 2) {
    if (r.element[1]->type != REDIS_REPLY_STRING)
      return Push::malformed;
    pattern = std::string_view(r.element[1]->str, r.element[1]->len);
  }
  channel = std::string_view(c->str, c->len);
  payload = std::string_view(p->str, p->len);
  return Push::message;
}

} // namespace

std::string_view reply_text(const redisReply *r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                          r->type == REDIS_REPLY_ERROR)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}

const char *redis_cmd_name(RedisCmd cmd) {
  switch (cmd) {
  case RedisCmd::auth:
    return "AUTH";
  case RedisCmd::select:
    return "SELECT";
  case RedisCmd::ping:
    return "PING";
  case RedisCmd::subscribe:
    return "SUBSCRIBE";
  case RedisCmd::unsubscribe:
    return "UNSUBSCRIBE";
  case RedisCmd::psubscribe:
    return "PSUBSCRIBE";
  case RedisCmd::xadd:
    return "XADD";
  case RedisCmd::function_load:
    return "FUNCTION LOAD";
  case RedisCmd::fcall:
    return "FCALL";
  case RedisCmd::presence:
    return "FCALL sidecar_presence";
  case RedisCmd::cluster_shards:
    return "CLUSTER SHARDS";
  case RedisCmd::cluster_slots:
    return "CLUSTER SLOTS";
  case RedisCmd::asking:
    return "ASKING";
  }
  return "?";
}

uint64_t redis_backoff_ms(const RedisConfig &cfg, uint32_t failures) {
  uint64_t delay = cfg.reconnect_initial_ms;
  for (uint32_t i = 1; i < failures && delay < cfg.reconnect_max_ms; ++i)
    delay *= 2;
  if (delay > cfg.reconnect_max_ms)
    delay = cfg.reconnect_max_ms;
  // Jitter, so that many sidecars do not hit a restarted Redis in the same millisecond.
  static std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  return static_cast<uint64_t>(static_cast<double>(delay) * jitter(rng));
}

// ----------------------------------------------------------------------------- RedisReplies

RedisReplies::RedisReplies(bool subscriber) : subscriber_(subscriber) { reset(); }

RedisReplies::~RedisReplies() {
  if (reader_ != nullptr)
    redisReaderFree(reader_);
}

void RedisReplies::reset() {
  ++generation_;
  fifo_.clear();
  if (reader_ != nullptr)
    redisReaderFree(reader_);
  // hiredis aborts on out-of-memory here (HIREDIS_OOM_HANDLER), so null is not expected; feed()
  // still checks.
  reader_ = redisReaderCreateWithFunctions(capped_reply_functions());
}

void RedisReplies::expect(RedisCmd cmd, std::string_view channel, uint64_t now_ms, uint64_t tag,
                          uint32_t batch_rest, bool batched) {
  fifo_.push_back(RedisPending{cmd, std::string(channel), now_ms, tag, batch_rest, batched});
}

std::string RedisReplies::feed(const char *data, size_t n, Sink &sink) {
  if (reader_ == nullptr)
    return "out of memory for the reply parser";
  if (redisReaderFeed(reader_, data, n) != REDIS_OK)
    return std::string("reply parser: ") + reader_->errstr;
  const uint64_t generation = generation_;
  while (generation == generation_) {
    void *raw = nullptr;
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK)
      return std::string("not RESP: ") + reader_->errstr;
    if (raw == nullptr)
      return "";
    std::unique_ptr<redisReply, ReplyFree> reply(static_cast<redisReply *>(raw));
    if (subscriber_) {
      std::string_view pattern, channel, payload;
      Push push = classify(*reply, pattern, channel, payload);
      if (push == Push::malformed)
        return "a pub/sub message of the wrong shape";
      if (push == Push::message) {
        sink.on_message(pattern, channel, payload);
        continue;
      }
      // ["sunsubscribe", channel, count] answers our SUNSUBSCRIBE of that channel, or is Redis
      // ending the subscription itself because the slot moved. It is a reply only when the
      // oldest command waiting is our UNSUBSCRIBE of that very channel; a push that comes just
      // before our own reply is then taken for it, and the reply, finding no such command,
      // becomes a push for a channel we no longer want, which the owner ignores.
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
          text_of(reply->element[0]) == "sunsubscribe" &&
          reply->element[1]->type == REDIS_REPLY_STRING) {
        std::string_view ch(reply->element[1]->str, reply->element[1]->len);
        if (fifo_.empty() || fifo_.front().cmd != RedisCmd::unsubscribe ||
            fifo_.front().channel != ch) {
          sink.on_shard_unsubscribed(ch);
          continue;
        }
      }
    }
    if (fifo_.empty())
      return "a reply that no command asked for";
    RedisPending cmd = std::move(fifo_.front());
    fifo_.pop_front();
    // An error refuses a command whole: the other channels it named get the same answer.
    uint32_t rest = reply->type == REDIS_REPLY_ERROR ? cmd.batch_rest : 0;
    sink.on_reply(cmd, *reply);
    for (; rest > 0 && generation == generation_ && !fifo_.empty(); --rest) {
      RedisPending more = std::move(fifo_.front());
      fifo_.pop_front();
      sink.on_reply(more, *reply);
    }
  }
  return "";
}

// ----------------------------------------------------------------------------- RedisLink

// One connection attempt and, once connected, the connection. It outlives its link's interest
// in it: `link` is cleared when the link gives it up, and the memory goes in the close
// callback, after libuv has run every pending connect and write callback (with UV_ECANCELED).
struct RedisLink::Conn {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_connect_t connect_req{};
  RedisLink *link = nullptr;
  std::unique_ptr<char[]> buf{new char[kReadBufferSize]};
  size_t queued = 0; // bytes in uv_write requests not yet completed
};

// A getaddrinfo for a host name; `link` is cleared when the link gives up waiting, and the
// request frees itself in its callback, which libuv always runs.
struct RedisLink::Resolve {
  uv_getaddrinfo_t req{};
  RedisLink *link = nullptr;
};

namespace {

struct WriteReq {
  uv_write_t req{};
  char *cmd = nullptr; // from redisFormatCommandArgv
  size_t len = 0;
};

} // namespace

RedisLink::RedisLink(uv_loop_t *loop, const RedisConfig &cfg, const char *name, bool subscriber,
                     Owner &owner)
    : loop_(loop), cfg_(cfg), name_(name), owner_(owner), subscriber_(subscriber),
      replies_(subscriber) {}

RedisLink::~RedisLink() { abandon(); }

std::string RedisLink::addr() const {
  return cfg_.unix_path.empty() ? cfg_.host + ":" + std::to_string(cfg_.port) : cfg_.unix_path;
}

void RedisLink::start() { connect(); }

void RedisLink::stop() {
  stopped_ = true;
  abandon();
  state_ = State::idle;
}

// Forgets the connection or the resolution in progress; their memory goes in their callbacks.
void RedisLink::abandon() {
  if (resolve_ != nullptr) {
    resolve_->link = nullptr;
    // The callback runs either way; cancelling only spares the thread pool the lookup.
    (void)uv_cancel(reinterpret_cast<uv_req_t *>(&resolve_->req));
    resolve_ = nullptr;
  }
  if (conn_ != nullptr) {
    conn_->link = nullptr;
    if (!uv_is_closing(&conn_->h.handle))
      uv_close(&conn_->h.handle, &RedisLink::on_closed);
    conn_ = nullptr;
  }
  replies_.reset();
  handshake_left_ = 0;
  ping_pending_ = false;
  doomed_ = nullptr;
}

void RedisLink::connect() {
  retry_at_ms_ = 0;
  connect_deadline_ms_ = uv_now(loop_) + cfg_.connect_timeout_ms;
  if (!cfg_.unix_path.empty()) {
    connect_to(nullptr);
    return;
  }
  sockaddr_storage ss{};
  if (uv_ip4_addr(cfg_.host.c_str(), cfg_.port, reinterpret_cast<sockaddr_in *>(&ss)) == 0 ||
      uv_ip6_addr(cfg_.host.c_str(), cfg_.port, reinterpret_cast<sockaddr_in6 *>(&ss)) == 0) {
    connect_to(reinterpret_cast<const sockaddr *>(&ss));
    return;
  }
  // A host name: resolved off the loop, so a slow DNS server delays only this link.
  auto *r = new (std::nothrow) Resolve;
  if (r == nullptr) {
    fail("out of memory");
    return;
  }
  r->link = this;
  r->req.data = r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  std::string port = std::to_string(cfg_.port);
  int rc = uv_getaddrinfo(loop_, &r->req, &RedisLink::on_resolved, cfg_.host.c_str(), port.c_str(),
                          &hints);
  if (rc != 0) {
    delete r;
    fail(std::string("cannot resolve ") + cfg_.host + ": " + uv_err_name(rc));
    return;
  }
  resolve_ = r;
  state_ = State::resolving;
}

void RedisLink::on_resolved(uv_getaddrinfo_t *req, int status, addrinfo *res) {
  std::unique_ptr<Resolve> r(static_cast<Resolve *>(req->data));
  RedisLink *link = r->link;
  guarded("redis.resolve", 0, "the link retries at its next deadline", [&] {
    if (link == nullptr)
      return;
    link->resolve_ = nullptr;
    if (status != 0 || res == nullptr) {
      link->fail("cannot resolve " + link->cfg_.host + ": " +
                 (status != 0 ? uv_err_name(status) : "no address"));
      return;
    }
    link->connect_to(res->ai_addr);
  });
  uv_freeaddrinfo(res);
}

// Starts a connect to `addr` (TCP) or to the unix socket path when `addr` is null.
void RedisLink::connect_to(const sockaddr *addr) {
  auto *c = new (std::nothrow) Conn;
  if (c == nullptr) {
    fail("out of memory");
    return;
  }
  int rc = addr != nullptr ? uv_tcp_init(loop_, &c->h.tcp) : uv_pipe_init(loop_, &c->h.pipe, 0);
  if (rc != 0) {
    delete c; // never initialised, so there is nothing to close
    fail(std::string("cannot create a socket: ") + uv_err_name(rc));
    return;
  }
  c->h.handle.data = c;
  c->connect_req.data = c;
  c->link = this;
  conn_ = c;
  state_ = State::connecting;
  if (addr != nullptr) {
    rc = uv_tcp_connect(&c->connect_req, &c->h.tcp, addr, &RedisLink::on_connected);
    if (rc != 0) {
      fail(std::string("connect: ") + uv_err_name(rc)); // closes c
      return;
    }
  } else {
    // uv_pipe_connect reports its errors through the callback.
    uv_pipe_connect(&c->connect_req, &c->h.pipe, cfg_.unix_path.c_str(), &RedisLink::on_connected);
  }
}

void RedisLink::on_connected(uv_connect_t *req, int status) {
  auto *c = static_cast<Conn *>(req->data);
  RedisLink *link = c->link;
  if (link == nullptr || status == UV_ECANCELED)
    return;
  guarded("redis.connect", 0, "the link retries at its next deadline", [&] {
    if (status != 0) {
      link->fail(std::string("connect: ") + uv_err_name(status));
      return;
    }
    link->connected();
  });
}

void RedisLink::connected() {
  connect_deadline_ms_ = 0;
  if (cfg_.unix_path.empty()) {
    // Both are tuning: a link without them still works, so a failure is only logged.
    int rc = uv_tcp_nodelay(&conn_->h.tcp, 1);
    if (rc == 0)
      rc = uv_tcp_keepalive(&conn_->h.tcp, 1, kKeepaliveDelayS);
    if (rc != 0)
      log_warn("redis_socket_option_failed", {{"link", name_}, {"err", uv_err_name(rc)}});
  }
  int rc = uv_read_start(&conn_->h.stream, &RedisLink::on_alloc, &RedisLink::on_read);
  if (rc != 0) {
    fail(std::string("read: ") + uv_err_name(rc));
    return;
  }
  state_ = State::handshake;
  handshake_left_ = 0;
  // AUTH and SELECT go first; the link is up once both are answered with OK.
  if (!cfg_.password.empty()) {
    bool ok = cfg_.username.empty()
                  ? send(RedisCmd::auth, {}, {"AUTH", cfg_.password})
                  : send(RedisCmd::auth, {}, {"AUTH", cfg_.username, cfg_.password});
    if (!ok) {
      fail(doomed_ != nullptr ? doomed_ : "cannot send AUTH");
      return;
    }
    ++handshake_left_;
  }
  if (!subscriber_ && cfg_.db != 0) {
    std::string db = std::to_string(cfg_.db);
    if (!send(RedisCmd::select, {}, {"SELECT", db})) {
      fail(doomed_ != nullptr ? doomed_ : "cannot send SELECT");
      return;
    }
    ++handshake_left_;
  }
  if (handshake_left_ == 0)
    became_up();
}

void RedisLink::became_up() {
  state_ = State::up;
  if (failures_ > 0)
    ++reconnects_;
  failures_ = 0;
  last_ping_ms_ = uv_now(loop_);
  log_info("redis_connected", {{"link", name_}, {"addr", addr()}});
  owner_.on_link_up(*this);
}

void RedisLink::on_closed(uv_handle_t *h) { delete static_cast<Conn *>(h->data); }

void RedisLink::on_alloc(uv_handle_t *h, size_t, uv_buf_t *buf) {
  auto *c = static_cast<Conn *>(h->data);
  *buf = uv_buf_init(c->buf.get(), static_cast<unsigned>(kReadBufferSize));
}

void RedisLink::on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  auto *c = static_cast<Conn *>(s->data);
  RedisLink *link = c->link;
  if (link == nullptr || nread == 0)
    return;
  guarded(
      "redis.read", 0, "the link is closed and reconnected",
      [&] {
        if (nread < 0) {
          link->fail(nread == UV_EOF
                         ? "connection closed by Redis"
                         : std::string("read: ") + uv_err_name(static_cast<int>(nread)));
          return;
        }
        link->read(buf->base, static_cast<size_t>(nread));
      },
      [&] {
        if (c->link != nullptr)
          c->link->doomed_ = "internal error while reading";
      });
}

void RedisLink::read(const char *data, size_t n) {
  Conn *c = conn_;
  std::string err = replies_.feed(data, n, *this);
  // A reply handler may have closed this connection (an AUTH refusal); then it is not ours.
  if (!err.empty() && conn_ == c && c != nullptr)
    fail("protocol: " + err);
}

void RedisLink::on_reply(const RedisPending &cmd, const redisReply &reply) {
  bool error = reply.type == REDIS_REPLY_ERROR;
  switch (cmd.cmd) {
  case RedisCmd::ping:
    // Any answer proves the link alive, even an error (an ACL without +ping).
    ping_pending_ = false;
    return;
  case RedisCmd::auth:
  case RedisCmd::select:
    if (error) {
      fail(std::string(redis_cmd_name(cmd.cmd)) + " refused: " + std::string(reply.str, reply.len));
      return;
    }
    if (handshake_left_ > 0 && --handshake_left_ == 0 && state_ == State::handshake)
      became_up();
    return;
  default:
    owner_.on_link_reply(*this, cmd, reply);
  }
}

void RedisLink::on_message(std::string_view pattern, std::string_view channel,
                           std::string_view payload) {
  owner_.on_link_message(pattern, channel, payload);
}

void RedisLink::on_shard_unsubscribed(std::string_view channel) {
  owner_.on_link_shard_unsubscribed(channel);
}

bool RedisLink::send(RedisCmd cmd, std::string_view channel, std::span<const std::string_view> args,
                     uint64_t tag) {
  if (!write_command(args))
    return false;
  replies_.expect(cmd, channel, uv_now(loop_), tag);
  return true;
}

bool RedisLink::send_batch(RedisCmd cmd, std::string_view verb,
                           std::span<const std::string> channels) {
  if (channels.empty())
    return true;
  std::vector<std::string_view> args;
  args.reserve(channels.size() + 1);
  args.push_back(verb);
  for (const std::string &c : channels)
    args.push_back(c);
  if (!write_command(args))
    return false;
  uint64_t now = uv_now(loop_);
  for (size_t i = 0; i < channels.size(); ++i)
    replies_.expect(cmd, channels[i], now, 0, static_cast<uint32_t>(channels.size() - 1 - i),
                    channels.size() > 1);
  return true;
}

bool RedisLink::write_command(std::span<const std::string_view> args) {
  if (conn_ == nullptr || doomed_ != nullptr || (state_ != State::up && state_ != State::handshake))
    return false;
  std::vector<const char *> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char *formatted = nullptr;
  int len =
      redisFormatCommandArgv(&formatted, static_cast<int>(argv.size()), argv.data(), lens.data());
  if (len < 0 || formatted == nullptr) {
    doomed_ = "out of memory formatting a command";
    return false;
  }
  auto *w = new (std::nothrow) WriteReq;
  if (w == nullptr) {
    redisFreeCommand(formatted);
    doomed_ = "out of memory";
    return false;
  }
  w->cmd = formatted;
  w->len = static_cast<size_t>(len);
  w->req.data = w;
  uv_buf_t b = uv_buf_init(formatted, static_cast<unsigned>(len));
  int rc = uv_write(&w->req, &conn_->h.stream, &b, 1, &RedisLink::on_written);
  if (rc != 0) {
    redisFreeCommand(formatted);
    delete w;
    doomed_ = "write refused by the socket";
    return false;
  }
  conn_->queued += w->len;
  if (conn_->queued > kMaxQueuedWriteBytes)
    doomed_ = "Redis is not reading: too many bytes waiting to be written";
  return true;
}

void RedisLink::on_written(uv_write_t *req, int status) {
  auto *w = static_cast<WriteReq *>(req->data);
  auto *c = static_cast<Conn *>(req->handle->data);
  c->queued -= w->len;
  redisFreeCommand(w->cmd);
  delete w;
  if (status != 0 && status != UV_ECANCELED && c->link != nullptr) {
    RedisLink *link = c->link;
    guarded("redis.write", 0, "the link is closed at its next tick",
            [&] { link->fail(std::string("write: ") + uv_err_name(status)); });
  }
}

void RedisLink::fail(const std::string &why) {
  bool was_up = state_ == State::up;
  abandon();
  state_ = State::idle;
  last_error_ = why;
  if (stopped_)
    return;
  if (was_up || failures_ == 0) {
    log_warn("redis_down", {{"link", name_},
                            {"reason", why},
                            {"action", "clients stay connected; reconnecting with backoff"}});
  } else {
    log_debug("redis_retry_failed", {{"link", name_}, {"reason", why}});
  }
  schedule_retry();
  owner_.on_link_down(*this, was_up);
}

void RedisLink::schedule_retry() {
  ++failures_;
  retry_at_ms_ = uv_now(loop_) + redis_backoff_ms(cfg_, failures_);
}

void RedisLink::tick(uint64_t now) {
  if (stopped_)
    return;
  if (doomed_ != nullptr) {
    fail(doomed_);
    return;
  }
  switch (state_) {
  case State::idle:
    if (retry_at_ms_ != 0 && now >= retry_at_ms_)
      connect();
    return;
  case State::resolving:
  case State::connecting:
    // A connect that hangs (a black-holed address) is abandoned.
    if (now >= connect_deadline_ms_)
      fail("connect timed out");
    return;
  case State::handshake:
  case State::up:
    break;
  }
  uint64_t oldest = replies_.oldest_sent_ms();
  if (oldest != 0 && now - oldest >= cfg_.reply_timeout_ms) {
    fail(std::string("no reply from Redis to ") + redis_cmd_name(replies_.oldest_cmd()) +
         " within " + std::to_string(cfg_.reply_timeout_ms) + " ms (redis.reply_timeout_ms)");
    return;
  }
  if (state_ == State::up && !ping_pending_ && now - last_ping_ms_ >= cfg_.ping_interval_ms) {
    last_ping_ms_ = now;
    if (send(RedisCmd::ping, {}, {"PING"}))
      ping_pending_ = true;
  }
}

} // namespace sidecar
