// RedisBus: the sidecar's two links to Redis (redis_link.h) on the libuv loop. The subscriber
// link SUBSCRIBEs the channels that rooms ask for and hands every message to a sink; the command
// link runs XADD for inbound client messages. A link that drops or goes silent is reconnected
// with backoff and jitter, and the subscriber subscribes every channel still wanted again.
//
// A SUBSCRIBE that Redis refuses (NOPERM from an ACL, OOM) costs only its channel: the channel
// is retried on its own with the same backoff, logged, counted by error code and reported to
// /ready, while every other channel on the link carries on.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config.h"
#include "redis_link.h"
#include "room.h"

namespace sidecar {

class RedisSink {
public:
  virtual void on_redis_message(std::string_view channel, std::string_view payload) = 0;
  virtual void on_redis_state(bool subscriber_connected) = 0;

protected:
  ~RedisSink() = default;
};

class RedisBus final : public Subscriber, private RedisLink::Owner {
public:
  RedisBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink);
  RedisBus(const RedisBus &) = delete;
  RedisBus &operator=(const RedisBus &) = delete;
  ~RedisBus();

  int start(); // initialises the timer and connects; returns a uv error or 0
  void stop(); // closes both links and the timer; no reconnects after this

  void subscribe(const std::string &channel) override;
  void unsubscribe(const std::string &channel) override;

  // XADD stream MAXLEN ~ maxlen * field value ...; false when the command link is down.
  bool xadd(const std::string &stream, uint32_t maxlen,
            const std::vector<std::pair<std::string, std::string>> &fields);

  bool connected() const { return sub_.up(); }
  bool command_connected() const { return cmd_.up(); }
  uint64_t reconnects() const { return sub_.reconnects() + cmd_.reconnects(); }
  size_t subscribed_channels() const;
  std::string last_error() const { return last_error_; }

  // Channels wanted by a room whose SUBSCRIBE Redis refused; each is being retried.
  size_t refused_channels() const;
  bool refused(const std::string &channel) const;
  // The latest refusal ("NOPERM this user has no permissions ..."); "" when none is current.
  std::string last_refusal() const;
  // Refused SUBSCRIBEs since start, by error code (NOPERM, OOM, ...; "other" for the rest). Every
  // code appears, with 0 when it never happened, so that the set of metric labels is fixed.
  const std::map<std::string, uint64_t> &subscribe_errors() const { return subscribe_errors_; }

private:
  enum class ChanState { none, subscribing, subscribed, unsubscribing, refused };
  struct Chan {
    bool wanted = false;
    ChanState state = ChanState::none;
    uint32_t refusals = 0;    // in a row; the backoff grows with it
    uint64_t retry_at_ms = 0; // when a refused channel is tried again
    std::string reply;        // the latest refusal
  };

  // RedisLink::Owner.
  void on_link_up(RedisLink &link) override;
  void on_link_down(RedisLink &link, bool was_up) override;
  void on_link_reply(RedisLink &link, const RedisPending &cmd, const redisReply &reply) override;
  void on_link_message(std::string_view channel, std::string_view payload) override;

  static void on_timer(uv_timer_t *t);
  void tick();
  void reconcile(const std::string &channel);
  void subscribe_answered(const std::string &channel, const redisReply &reply);
  void refuse(Chan &chan, const std::string &channel, std::string reply);

  uv_loop_t *loop_;
  RedisConfig cfg_; // before the links, which keep a reference to it
  RedisSink &sink_;
  uv_timer_t timer_{};
  bool timer_init_ = false;
  bool stopping_ = false;
  RedisLink sub_;
  RedisLink cmd_;
  std::unordered_map<std::string, Chan> chans_;
  std::map<std::string, uint64_t> subscribe_errors_;
  std::string last_error_;
  std::string last_refusal_;
};

} // namespace sidecar
