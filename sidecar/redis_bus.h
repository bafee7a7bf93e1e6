// RedisBus: the sidecar's two links to Redis (redis_link.h) on the libuv loop. The subscriber
// link SUBSCRIBEs the channels that rooms ask for and hands every message to a sink; the command
// link runs XADD for inbound client messages. A link that drops or goes silent is reconnected
// with backoff and jitter, and the subscriber subscribes every channel still wanted again.
//
// A SUBSCRIBE that Redis refuses (NOPERM from an ACL, OOM) costs only its channel: the channel
// is retried on its own with the same backoff, logged, counted by error code and reported to
// /ready, while every other channel on the link carries on.
//
// Two subscriptions belong to the bus itself rather than to rooms (issue 15), and live as long
// as it does: the control channel (SUBSCRIBE), whose messages go to the sink's on_control and
// never to a room, and this sidecar's connection channels (one PSUBSCRIBE on its own
// connection-id prefix), whose messages go to on_connection_message. Both are subscribed again
// after every reconnect and retried when refused, exactly as a room's channel is.
//
// With redis.pubsub: sharded (issue 13) rooms' channels are SSUBSCRIBEd instead (the bus's own
// control channel and pattern stay global), and Redis may end one with a `sunsubscribe` push when
// its slot moves; the sink is told (on_subscription_lost) and decides where it goes next.
//
// With history configured (issue 11) the command link also loads the Redis Function library
// (FUNCTION LOAD REPLACE) on every connect, before any read it carries, and answers history
// reads: one FCALL sidecar_read per distinct (channel, from, count) serves every waiter that
// asked for it before it was written. With history off none of this sends or costs anything.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config.h"
#include "history.h"
#include "history_reads.h"
#include "message_bus.h"
#include "redis_link.h"
#include "room.h"

namespace sidecar {

// What the bus tells the server. All of it comes from libuv callbacks on the loop.
class RedisSink {
public:
  virtual void on_redis_message(std::string_view channel, std::string_view payload) = 0;
  virtual void on_redis_state(bool subscriber_connected) = 0;
  // Redis confirmed SUBSCRIBE `channel` on the current subscriber connection (the first time,
  // or again after a reconnect). From here on nothing published on it is missed while the link
  // stays up, so this is when a history room may send its first read.
  virtual void on_subscribed(std::string_view) {}
  // The subscriber link is up again after it had been up and dropped: whatever was published
  // meanwhile is lost to every room. Told once per return, before on_redis_state(true) and
  // before any SUBSCRIBE of the new connection is confirmed, so a room can mark itself as
  // needing a read here and send it from on_subscribed. Not told on the first connect.
  virtual void on_subscriber_reconnected() {}
  // The subscription of `channel` ended without the sink asking: Redis pushed `sunsubscribe`
  // (its slot moved to another shard) or refused a SSUBSCRIBE with MOVED. What is published on
  // it until on_subscribed(channel) is lost to its room. Only sharded pub/sub does this.
  virtual void on_subscription_lost(std::string_view) {}
  // A message on the control channel (set_control_channel); never also given to a room.
  virtual void on_control_message(std::string_view) {}
  // A message on a channel matched by the connection pattern (set_connection_pattern).
  virtual void on_connection_message(std::string_view, std::string_view) {}
  // The reply to an XADD sent with a tag (RedisBus::send_xadd), errors included: the cluster bus
  // follows its redirects. An untagged XADD's error is logged by the bus.
  virtual void on_xadd_answered(uint64_t, const redisReply &) {}

protected:
  ~RedisSink() = default;
};

// Distinct history reads (FCALLs sent or waiting to be) at once; more are refused as failed. A
// resume storm needs about one per room and position, and each pending read holds a channel
// name and its waiters; this many outstanding means Redis is far behind, and queueing more
// would only answer them all later than their deadline.
inline constexpr size_t kMaxHistoryReadsInFlight = 10'000;

class RedisBus final : public MessageBus, private RedisLink::Owner {
public:
  // `history` must have passed check_history; empty means history is off.
  RedisBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink,
           std::vector<HistoryConfig> history = {});
  RedisBus(const RedisBus &) = delete;
  RedisBus &operator=(const RedisBus &) = delete;
  ~RedisBus() override;

  // Before start(); empty keeps each off. The pattern is given as Redis matches it (glob).
  void set_control_channel(std::string channel) override;
  void set_connection_pattern(std::string pattern) override;

  int start() override; // initialises the timer and connects; returns a uv error or 0
  // Connects the subscriber link only once something is to be subscribed: a cluster's master that
  // serves no room needs its command link alone. Call before start().
  void subscribe_on_demand() { sub_on_demand_ = true; }
  // Between these, channels to subscribe are gathered and then sent in batches (one SUBSCRIBE
  // per 100 channels; one SSUBSCRIBE per slot and 100); outside, each is sent at once. Nests.
  void hold_subscribes() { ++hold_; }
  void release_subscribes();
  bool subscriber_started() const { return sub_started_; }
  // Closes both links and the handles; no reconnects after this. Reads still pending are
  // forgotten without calling their waiters.
  void stop() override;

  void subscribe(const std::string &channel) override;
  void unsubscribe(const std::string &channel) override;

  // XADD stream MAXLEN ~ maxlen * field value ...; false when the command link is down.
  bool xadd(const std::string &stream, uint32_t maxlen,
            const std::vector<std::pair<std::string, std::string>> &fields) override {
    return send_xadd(stream, maxlen, fields, 0, false);
  }
  // The same with a `tag`, whose reply goes to RedisSink::on_xadd_answered, and after ASKING
  // when `asking` (the target of an ASK redirect).
  bool send_xadd(const std::string &stream, uint32_t maxlen,
                 const std::vector<std::pair<std::string, std::string>> &fields, uint64_t tag,
                 bool asking);

  // Presence (issue 15): set before start(); `p` outlives the bus's links.
  void set_presence(PresenceLink *p) override { presence_ = p; }
  // A command on the command link whose reply goes to the PresenceLink with `tag`; false when
  // the link is down.
  bool presence_send(std::span<const std::string_view> args, uint64_t tag) override {
    return cmd_.send(RedisCmd::presence, {}, args, tag);
  }
  bool presence_send(std::initializer_list<std::string_view> args, uint64_t tag) {
    return presence_send(std::span<const std::string_view>(args.begin(), args.size()), tag);
  }

  // HistoryReads. While the command link is down a read waits for it up to
  // redis.reply_timeout_ms; stop() forgets every read without calling its waiters.
  HistoryReadToken read_history(std::string channel, uint64_t from, uint32_t count,
                                HistoryReadCallback cb) override;
  HistoryReadToken read_history_shared(std::string channel, uint64_t from, uint32_t count,
                                       HistoryReadCallback cb) override;
  // The same read sent after ASKING: the cluster bus following an ASK redirect to this node.
  HistoryReadToken read_history_asking(std::string channel, uint64_t from, uint32_t count,
                                       HistoryReadCallback cb);
  void cancel_history_read(HistoryReadToken token) override;

  bool history_enabled() const override { return !library_.empty(); }
  // The library is loaded on the current command connection, so reads can be answered.
  bool history_ready() const override { return lib_state_ == LibState::ready; }
  // Reads fail at once: the library was refused for a reason that does not pass by itself.
  bool history_refusing() const override { return lib_refusing(); }
  // Why it is not: the latest FUNCTION LOAD refusal or the library found missing; "" when the
  // library is loaded, or while the first load is still on its way.
  std::string history_error() const override { return history_error_; }
  uint64_t function_loads() const { return function_loads_; }
  uint64_t function_load_failures() const { return function_load_failures_; }
  uint64_t reads_sent() const override { return reads_sent_; }           // FCALLs written
  uint64_t reads_coalesced() const override { return reads_coalesced_; } // waiters that joined one

  // Redis confirmed the SUBSCRIBE of `channel` on the current connection.
  bool subscribed(const std::string &channel) const override;

  bool connected() const override { return sub_.up(); }
  bool command_connected() const override { return cmd_.up(); }
  uint64_t reconnects() const override { return sub_.reconnects() + cmd_.reconnects(); }
  size_t subscribed_channels() const override;
  std::string last_error() const override { return last_error_; }

  // Channels wanted by a room (or the bus: control channel, connection pattern) whose SUBSCRIBE
  // or PSUBSCRIBE Redis refused; each is being retried.
  size_t refused_channels() const override;
  bool refused(const std::string &channel) const override;
  // The latest refusal ("NOPERM this user has no permissions ..."); "" when none is current.
  std::string last_refusal() const override;
  // Refused SUBSCRIBEs since start, by error code (NOPERM, OOM, ...; "other" for the rest). Every
  // code appears, with 0 when it never happened, so that the set of metric labels is fixed.
  const std::map<std::string, uint64_t> &subscribe_errors() const override {
    return subscribe_errors_;
  }

private:
  // queued: to be SUBSCRIBEd with the others queued when the hold ends (hold_subscribes).
  enum class ChanState { none, queued, subscribing, subscribed, unsubscribing, refused };
  struct Chan {
    bool wanted = false; // by a room
    bool pinned = false; // by the bus itself: the control channel
    bool want() const { return wanted || pinned; }
    ChanState state = ChanState::none;
    uint32_t refusals = 0;    // in a row; the backoff grows with it
    uint64_t retry_at_ms = 0; // when a refused channel is tried again
    std::string reply;        // the latest refusal
    bool alone = false;       // its batch was refused whole: it is sent on its own from now on
  };

  // RedisLink::Owner.
  void on_link_up(RedisLink &link) override;
  void on_link_down(RedisLink &link, bool was_up) override;
  void on_link_reply(RedisLink &link, const RedisPending &cmd, const redisReply &reply) override;
  void on_link_message(std::string_view pattern, std::string_view channel,
                       std::string_view payload) override;
  void on_link_shard_unsubscribed(std::string_view channel) override;

  enum class LibState { off, waiting, loading, ready, failed };
  struct ReadKey {
    std::string channel;
    uint64_t from = 0;
    uint32_t count = 0;
    bool asking = false; // sent after ASKING (read_history_asking), never shared with others
    auto operator<=>(const ReadKey &) const = default;
  };
  struct Waiter {
    HistoryReadToken token;
    HistoryReadCallback cb; // empty once cancelled or called
  };
  struct PendingRead {
    ReadKey key;
    std::vector<Waiter> waiters;
    bool sent = false;
    uint64_t asked_ms = 0; // when the first waiter asked; a read not sent by the deadline fails
    std::string refusal;   // refused when asked: answered with this at the next flush
  };
  struct WaiterAt {
    uint64_t read = 0;
    size_t index = 0; // into the read's waiters, which only grow until it is answered
  };
  // The reads of one key: at most one written and one still taking waiters (0 when none).
  struct KeyReads {
    uint64_t collecting = 0;
    uint64_t sent = 0;
  };

  static void on_timer(uv_timer_t *t);
  static void on_idle(uv_idle_t *h);
  void tick();
  void flush_reads();
  void flush_subscribes();
  void wake_flush();
  void send_function_load();
  void function_load_answered(const redisReply &reply);
  void history_unavailable(std::string why);
  void read_answered(uint64_t id, const redisReply &reply);
  void answer(uint64_t id, const HistoryReadResult &result);
  void fail_read(uint64_t id, const std::string &why);
  HistoryReadToken refuse_read(ReadKey key, HistoryReadCallback cb, std::string why);
  HistoryReadToken ask_read(ReadKey key, HistoryReadCallback cb);
  bool send_read(uint64_t id, PendingRead &read);
  void reconcile(const std::string &channel);
  void start_subscriber();
  void reconcile_pattern();
  void subscribe_answered(const std::string &channel, const redisReply &reply, bool batched);
  void psubscribe_answered(const redisReply &reply);
  void refuse(Chan &chan, const std::string &channel, std::string reply);

  uv_loop_t *loop_;
  RedisConfig cfg_; // before the links, which keep a reference to it
  RedisSink &sink_;
  PresenceLink *presence_ = nullptr;
  uv_timer_t timer_{};
  bool timer_init_ = false;
  bool started_ = false;
  bool sub_on_demand_ = false; // subscribe_on_demand()
  bool sub_started_ = false;   // the subscriber link was started
  // Reads are written once per loop turn from this idle handle, so that every waiter that asks
  // in one turn shares the FCALL, and the answers to refused reads are never given from inside
  // read_history. Active only while something waits for it.
  uv_idle_t idle_{};
  bool idle_init_ = false;
  bool stopping_ = false;
  RedisLink sub_;
  RedisLink cmd_;
  std::unordered_map<std::string, Chan> chans_;
  std::vector<std::string> queued_; // channels whose state is queued, in the order they were
  int hold_ = 0;                    // hold_subscribes() without its release_subscribes()
  std::string control_;             // the control channel; "" when off
  std::string pattern_;             // the connection-channel pattern; "" when off
  Chan pattern_chan_;               // its state; `pinned` while pattern_ is set
  std::map<std::string, uint64_t> subscribe_errors_;
  std::string last_error_;
  std::string last_refusal_;
  bool sub_was_up_ = false;

  std::string library_; // FUNCTION LOAD's text; empty when history is off
  LibState lib_state_ = LibState::off;
  // The last LOAD failed for a passing reason (Redis still loading its data set after a restart,
  // a busy script): reads wait for the retry, as they wait for a link that is reconnecting,
  // instead of failing at once.
  bool lib_transient_ = false;
  bool lib_refusing() const { return lib_state_ == LibState::failed && !lib_transient_; }
  std::string history_error_;
  std::string last_read_error_; // the latest error reply to a read, logged once per change
  uint32_t load_failures_in_row_ = 0;
  uint64_t load_retry_at_ms_ = 0;
  uint64_t function_loads_ = 0;
  uint64_t function_load_failures_ = 0;
  uint64_t reads_sent_ = 0;
  uint64_t reads_coalesced_ = 0;
  uint64_t next_id_ = 1;                  // read ids and waiter tokens, one sequence
  std::map<uint64_t, PendingRead> reads_; // by id, so in the order asked
  std::map<ReadKey, KeyReads> keys_;      // which reads a new waiter may join
  std::unordered_map<HistoryReadToken, WaiterAt> tokens_; // waiters not yet called
  // The waiters of the read being answered, which has already left reads_: a callback may
  // cancel one that comes after it.
  uint64_t answering_id_ = 0;
  std::vector<Waiter> *answering_ = nullptr;
};

} // namespace sidecar
