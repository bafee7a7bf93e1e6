// RedisBus: the sidecar's two hiredis async connections on the libuv loop. The subscriber
// connection SUBSCRIBEs the channels that rooms ask for and hands every message to a sink; the
// command connection runs XADD for inbound client messages. Either connection that drops is
// reconnected with exponential backoff and jitter, and the subscriber re-subscribes every channel
// still wanted. hiredis owns each redisAsyncContext: we ask for a disconnect and forget the
// pointer in the disconnect callback; we never free one that hiredis is still using.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config.h"
#include "room.h"

struct redisAsyncContext;
struct redisReply;

namespace sidecar {

class RedisSink {
public:
  virtual void on_redis_message(std::string_view channel, std::string_view payload) = 0;
  virtual void on_redis_state(bool subscriber_connected) = 0;

protected:
  ~RedisSink() = default;
};

class RedisBus : public Subscriber {
public:
  RedisBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink);
  RedisBus(const RedisBus &) = delete;
  RedisBus &operator=(const RedisBus &) = delete;
  ~RedisBus();

  int start(); // initialises the retry timer and connects; returns a uv error or 0
  void stop(); // disconnects both connections and closes the timer; no reconnects after this

  void subscribe(const std::string &channel) override;
  void unsubscribe(const std::string &channel) override;

  // XADD stream MAXLEN ~ maxlen * field value ...; false when the command connection is down.
  bool xadd(const std::string &stream, uint32_t maxlen,
            const std::vector<std::pair<std::string, std::string>> &fields);

  bool connected() const { return sub_.up; }
  bool command_connected() const { return cmd_.up; }
  uint64_t reconnects() const { return reconnects_; }
  size_t subscribed_channels() const;
  std::string last_error() const { return last_error_; }

private:
  enum class ChanState { none, subscribing, subscribed, unsubscribing };
  struct Chan {
    bool wanted = false;
    ChanState state = ChanState::none;
  };
  struct Link {
    const char *name;
    redisAsyncContext *ac = nullptr;
    bool up = false;
    uint32_t failures = 0;
    uint64_t retry_at_ms = 0; // 0: no retry scheduled
    uint64_t connect_deadline_ms = 0;
  };

  static void on_connect(const redisAsyncContext *ac, int status);
  static void on_disconnect(const redisAsyncContext *ac, int status);
  static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);
  static void on_cmd_reply(redisAsyncContext *ac, void *reply, void *priv);
  static void on_timer(uv_timer_t *t);

  void connect(Link &link);
  void link_down(Link &link, const std::string &why);
  void schedule_retry(Link &link);
  void reconcile(const std::string &channel);
  void tick();
  Link *link_of(const redisAsyncContext *ac);

  uv_loop_t *loop_;
  RedisConfig cfg_;
  RedisSink &sink_;
  uv_timer_t timer_{};
  bool timer_init_ = false;
  bool stopping_ = false;
  Link sub_{"subscriber"};
  Link cmd_{"command"};
  std::unordered_map<std::string, Chan> chans_;
  uint64_t reconnects_ = 0;
  std::string last_error_;
};

} // namespace sidecar
