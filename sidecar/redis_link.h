// RedisLink: one connection to Redis that the sidecar owns end to end, on a libuv TCP (or unix
// socket) stream. hiredis only encodes commands (redisFormatCommandArgv) and parses replies
// (redisReader); matching each reply to the command that caused it is ours. We replaced hiredis
// 0.14's async API because, in subscribed mode, it never hands the `["pong",""]` reply of a PING
// to the PING's callback (so no liveness probe is possible), and it treats an error reply to
// SUBSCRIBE (NOPERM, OOM) as fatal for the whole connection, which deafened every room and
// reconnected in a loop.
//
// Every command we send expects exactly one reply, in order: a FIFO of pending commands maps an
// error to the command that caused it. In subscribed mode `message`/`pmessage`/`smessage` arrays
// are pushes, not replies; SUBSCRIBE, UNSUBSCRIBE and PSUBSCRIBE always name one channel or
// pattern, so each yields exactly one reply. A command left unanswered past
// redis.reply_timeout_ms means the link is dead (a partition, a NAT that dropped the flow, a
// frozen Redis): it is closed and reconnected with backoff. A PING every redis.ping_interval_ms
// makes sure there is always something to answer.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "config.h"

struct redisReader;
struct redisReply;

namespace sidecar {

// The text of a string, status or error reply (an error's is Redis's reason); empty for any
// other type and for null.
std::string_view reply_text(const redisReply *r);

// What a command sent on a link was, so that its reply reaches the right place.
enum class RedisCmd : uint8_t {
  auth,
  select,
  ping,
  subscribe,
  unsubscribe,
  psubscribe, // one pattern: the connection channels of this sidecar
  xadd,
  function_load,  // FUNCTION LOAD REPLACE of the history library
  fcall,          // FCALL sidecar_read; the tag names the read
  presence,       // presence's LOAD, FCALLs and reads (presence_sync.h); the tag names which
  cluster_shards, // the cluster bus's topology reads
  cluster_slots,
  asking, // ASKING before a command sent on after an ASK redirect (cluster bus)
};

struct RedisPending {
  RedisCmd cmd = RedisCmd::ping;
  std::string channel; // SUBSCRIBE and UNSUBSCRIBE only
  uint64_t sent_ms = 0;
  uint64_t tag = 0; // the sender's own name for the command (RedisBus: which history read)
  // Replies still owed after this one to the same command: a SUBSCRIBE naming several channels
  // is answered channel by channel, or refused whole with one error, which all of them get.
  uint32_t batch_rest = 0;
  bool batched = false; // the command named other channels too
};

// The pure half of a link: RESP bytes in, each reply handed over with the command it answers,
// pub/sub messages told apart from replies. No I/O, so unit tests feed it byte by byte.
class RedisReplies {
public:
  class Sink {
  public:
    virtual void on_reply(const RedisPending &cmd, const redisReply &reply) = 0;
    // `pattern` is the subscribed pattern of a pmessage, empty for message and smessage.
    virtual void on_message(std::string_view pattern, std::string_view channel,
                            std::string_view payload) = 0;
    // Redis pushed `sunsubscribe` for a sharded channel that we did not ask to leave (its slot
    // moved). Our own SUNSUBSCRIBE's answer is a reply, not this.
    virtual void on_shard_unsubscribed(std::string_view) {}

  protected:
    ~Sink() = default;
  };

  // `subscriber`: pub/sub pushes may arrive (only the subscriber link SUBSCRIBEs).
  explicit RedisReplies(bool subscriber);
  ~RedisReplies();
  RedisReplies(const RedisReplies &) = delete;
  RedisReplies &operator=(const RedisReplies &) = delete;

  void expect(RedisCmd cmd, std::string_view channel, uint64_t now_ms, uint64_t tag = 0,
              uint32_t batch_rest = 0, bool batched = false);
  // Parses `data` and dispatches every complete reply. Returns "" or why the connection cannot
  // go on (bytes that are not RESP, a reply no command asked for). A sink that calls reset()
  // stops the dispatch: the rest belongs to a connection that is gone.
  std::string feed(const char *data, size_t n, Sink &sink);
  // A new connection: a fresh parser and no pending commands.
  void reset();

  size_t pending() const { return fifo_.size(); }
  // When the oldest command still waiting for its reply was sent; 0 when none is.
  uint64_t oldest_sent_ms() const { return fifo_.empty() ? 0 : fifo_.front().sent_ms; }
  RedisCmd oldest_cmd() const { return fifo_.front().cmd; }

private:
  bool subscriber_;
  redisReader *reader_ = nullptr;
  std::deque<RedisPending> fifo_;
  uint64_t generation_ = 0; // bumped by reset(), so that feed() notices it
};

// The name of a command for logs ("SUBSCRIBE").
const char *redis_cmd_name(RedisCmd cmd);

// The delay before attempt number `failures` + 1: redis.reconnect_initial_ms, doubling with
// each failure up to redis.reconnect_max_ms, times a random factor in [0.8, 1.2]. Reconnects and
// retries of refused channels both follow it.
uint64_t redis_backoff_ms(const RedisConfig &cfg, uint32_t failures);

class RedisLink final : private RedisReplies::Sink {
public:
  // The link's owner (RedisBus). Callbacks come from libuv callbacks, never from send().
  class Owner {
  public:
    virtual void on_link_up(RedisLink &link) = 0;
    virtual void on_link_down(RedisLink &link, bool was_up) = 0;
    // Replies to every command the owner sent (the link answers AUTH, SELECT and PING itself).
    virtual void on_link_reply(RedisLink &link, const RedisPending &cmd,
                               const redisReply &reply) = 0;
    // `pattern`: as RedisReplies::Sink::on_message has it.
    virtual void on_link_message(std::string_view pattern, std::string_view channel,
                                 std::string_view payload) = 0;
    // As RedisReplies::Sink::on_shard_unsubscribed has it.
    virtual void on_link_shard_unsubscribed(std::string_view) {}

  protected:
    ~Owner() = default;
  };

  RedisLink(uv_loop_t *loop, const RedisConfig &cfg, const char *name, bool subscriber,
            Owner &owner);
  ~RedisLink();
  RedisLink(const RedisLink &) = delete;
  RedisLink &operator=(const RedisLink &) = delete;

  void start(); // the first connect
  void stop();  // closes the connection; no reconnects after this
  // Called every few tens of milliseconds: retries, connect and reply deadlines, the probe.
  void tick(uint64_t now_ms);

  // Sends one command. False when the link is not up or the write cannot be queued; then the
  // link is closed at the next tick. Never calls back into the owner. `tag` comes back with the
  // reply in RedisPending::tag.
  bool send(RedisCmd cmd, std::string_view channel, std::span<const std::string_view> args,
            uint64_t tag = 0);
  bool send(RedisCmd cmd, std::string_view channel, std::initializer_list<std::string_view> args,
            uint64_t tag = 0) {
    return send(cmd, channel, std::span<const std::string_view>(args.begin(), args.size()), tag);
  }

  // One command naming several channels (SUBSCRIBE or SSUBSCRIBE `channels`...): each channel's
  // reply comes back with its own RedisPending, an error for the whole command to each of them.
  bool send_batch(RedisCmd cmd, std::string_view verb, std::span<const std::string> channels);

  bool up() const { return state_ == State::up; }
  const char *name() const { return name_; }
  const std::string &last_error() const { return last_error_; }
  uint64_t reconnects() const { return reconnects_; }

private:
  enum class State { idle, resolving, connecting, handshake, up };
  struct Conn;
  struct Resolve;

  static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res);
  static void on_connected(uv_connect_t *req, int status);
  static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
  static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
  static void on_written(uv_write_t *req, int status);
  bool write_command(std::span<const std::string_view> args); // formats and queues; no expect
  static void on_closed(uv_handle_t *h);

  void connect();
  void connect_to(const sockaddr *addr);
  void connected();
  void read(const char *data, size_t n);
  void fail(const std::string &why);
  void abandon();
  void schedule_retry();
  void became_up();
  std::string addr() const;

  void on_reply(const RedisPending &cmd, const redisReply &reply) override;
  void on_message(std::string_view pattern, std::string_view channel,
                  std::string_view payload) override;
  void on_shard_unsubscribed(std::string_view channel) override;

  uv_loop_t *loop_;
  const RedisConfig &cfg_;
  const char *name_;
  Owner &owner_;
  bool subscriber_;
  RedisReplies replies_;
  State state_ = State::idle;
  Conn *conn_ = nullptr;       // freed in its close callback; null when there is none
  Resolve *resolve_ = nullptr; // freed in its callback; null when none is running
  bool stopped_ = false;
  const char *doomed_ = nullptr; // why a failed send() closes the link at the next tick
  uint32_t failures_ = 0;        // attempts since the link was last up
  uint32_t handshake_left_ = 0;  // AUTH and SELECT replies still awaited
  uint64_t retry_at_ms_ = 0;     // 0: no retry scheduled
  uint64_t connect_deadline_ms_ = 0;
  uint64_t last_ping_ms_ = 0;
  bool ping_pending_ = false;
  uint64_t reconnects_ = 0;
  std::string last_error_;
};

} // namespace sidecar
