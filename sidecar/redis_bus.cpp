// RedisBus; see redis_bus.h.
#include "redis_bus.h"

#include <hiredis/hiredis.h>

#include "guard.h"
#include "log.h"

namespace sidecar {
namespace {

// The error codes counted by name; anything else is "other", so a metric label never carries
// text that Redis (or a proxy in front of it) made up.
constexpr const char *kErrorCodes[] = {"NOPERM", "OOM",       "READONLY", "LOADING",
                                       "MOVED",  "CROSSSLOT", "ERR",      "other"};

std::string error_code(std::string_view reply) {
  std::string_view word = reply.substr(0, reply.find(' '));
  for (const char *code : kErrorCodes) {
    if (word == code)
      return code;
  }
  return "other";
}

std::string_view text_of(const redisReply *r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                          r->type == REDIS_REPLY_ERROR)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}

} // namespace

RedisBus::RedisBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink)
    : loop_(loop), cfg_(cfg), sink_(sink), sub_(loop, cfg_, "subscriber", true, *this),
      cmd_(loop, cfg_, "command", false, *this) {
  for (const char *code : kErrorCodes)
    subscribe_errors_[code] = 0;
}

RedisBus::~RedisBus() = default;

int RedisBus::start() {
  int rc = uv_timer_init(loop_, &timer_);
  if (rc != 0)
    return rc;
  timer_init_ = true;
  timer_.data = this;
  // One coarse timer drives both links (retries, deadlines, probes) and the retries of refused
  // channels; 50 ms is well below any deadline a user can configure.
  rc = uv_timer_start(&timer_, &RedisBus::on_timer, 50, 50);
  if (rc != 0)
    return rc;
  sub_.start();
  cmd_.start();
  return 0;
}

void RedisBus::stop() {
  stopping_ = true;
  sub_.stop();
  cmd_.stop();
  if (timer_init_ && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t *>(&timer_), nullptr);
}

void RedisBus::on_timer(uv_timer_t *t) {
  auto *self = static_cast<RedisBus *>(t->data);
  guarded("redis.tick", 0, "trying again at the next tick", [&] { self->tick(); });
}

void RedisBus::tick() {
  if (stopping_)
    return;
  uint64_t now = uv_now(loop_);
  sub_.tick(now);
  cmd_.tick(now);
  std::vector<std::string> due;
  for (auto &[name, chan] : chans_) {
    if (chan.state == ChanState::refused && now >= chan.retry_at_ms)
      due.push_back(name);
  }
  for (const auto &name : due) {
    chans_[name].state = ChanState::none;
    reconcile(name);
  }
}

void RedisBus::on_link_up(RedisLink &link) {
  if (&link != &sub_)
    return;
  // Every channel a room still wants is subscribed again on the new connection.
  std::vector<std::string> names;
  names.reserve(chans_.size());
  for (auto &[name, chan] : chans_) {
    chan.state = ChanState::none;
    names.push_back(name);
  }
  for (const auto &n : names)
    reconcile(n);
  sink_.on_redis_state(true);
}

void RedisBus::on_link_down(RedisLink &link, bool was_up) {
  last_error_ = link.last_error();
  if (&link != &sub_)
    return;
  for (auto it = chans_.begin(); it != chans_.end();) {
    it->second.state = ChanState::none;
    it = it->second.wanted ? std::next(it) : chans_.erase(it);
  }
  // A disconnect we asked for at shutdown is not an outage.
  if (was_up && !stopping_)
    sink_.on_redis_state(false);
}

void RedisBus::on_link_message(std::string_view channel, std::string_view payload) {
  sink_.on_redis_message(channel, payload);
}

void RedisBus::on_link_reply(RedisLink &, const RedisPending &cmd, const redisReply &reply) {
  switch (cmd.cmd) {
  case RedisCmd::subscribe:
    subscribe_answered(cmd.channel, reply);
    return;
  case RedisCmd::unsubscribe:
    if (auto it = chans_.find(cmd.channel); it != chans_.end()) {
      if (reply.type == REDIS_REPLY_ERROR) {
        // Still subscribed, then: its messages count as unrouted until a room wants it again.
        log_warn("redis_unsubscribe_refused",
                 {{"channel", cmd.channel}, {"reply", text_of(&reply)}, {"action", "ignored"}});
      }
      it->second.state = ChanState::none;
      reconcile(cmd.channel);
    }
    return;
  default:
    if (reply.type == REDIS_REPLY_ERROR) {
      log_error("redis_error",
                {{"command", redis_cmd_name(cmd.cmd)},
                 {"reply", text_of(&reply)},
                 {"action", "check redis.url credentials, ACLs and the stream key"}});
    }
    return;
  }
}

void RedisBus::subscribe_answered(const std::string &channel, const redisReply &reply) {
  auto it = chans_.find(channel);
  if (it == chans_.end())
    return;
  Chan &chan = it->second;
  bool ok = reply.type == REDIS_REPLY_ARRAY && reply.elements == 3 &&
            text_of(reply.element[0]) == "subscribe";
  if (ok) {
    chan.state = ChanState::subscribed;
    if (chan.refusals > 0) {
      log_info("redis_subscribe_recovered",
               {{"channel", channel}, {"attempts", chan.refusals + 1}});
      chan.refusals = 0;
      chan.reply.clear();
    }
  } else {
    std::string text = reply.type == REDIS_REPLY_ERROR
                           ? std::string(text_of(&reply))
                           : "unexpected reply of type " + std::to_string(reply.type);
    refuse(chan, channel, std::move(text));
  }
  reconcile(channel);
}

void RedisBus::refuse(Chan &chan, const std::string &channel, std::string reply) {
  ++subscribe_errors_[error_code(reply)];
  ++chan.refusals;
  chan.state = ChanState::refused;
  uint64_t delay = redis_backoff_ms(cfg_, chan.refusals);
  chan.retry_at_ms = uv_now(loop_) + delay;
  // One warning per channel and cause; the retries that follow are debug lines.
  bool news = chan.refusals == 1 || reply != chan.reply;
  chan.reply = std::move(reply);
  last_refusal_ = chan.reply;
  log_event(news ? LogConfig::Level::warn : LogConfig::Level::debug, "redis_subscribe_refused",
            {{"channel", channel},
             {"reply", chan.reply},
             {"attempt", chan.refusals},
             {"retry_in_ms", delay},
             {"action", "this room receives nothing until Redis accepts; retrying with backoff "
                        "(grant the channel to the redis.url user or fix Redis)"}});
}

void RedisBus::subscribe(const std::string &channel) {
  chans_[channel].wanted = true;
  reconcile(channel);
}

void RedisBus::unsubscribe(const std::string &channel) {
  auto it = chans_.find(channel);
  if (it == chans_.end())
    return;
  it->second.wanted = false;
  reconcile(channel);
}

// At most one SUBSCRIBE or UNSUBSCRIBE per channel is in flight; when its reply comes the state
// is compared with what rooms want again. So a quick leave-and-rejoin never has two commands for
// one channel in flight, and a refused channel waits for its retry time.
void RedisBus::reconcile(const std::string &channel) {
  auto it = chans_.find(channel);
  if (it == chans_.end())
    return;
  Chan &c = it->second;
  bool idle = c.state == ChanState::none || c.state == ChanState::refused;
  if (!c.wanted && idle) {
    chans_.erase(it);
    return;
  }
  if (!sub_.up())
    return;
  if (c.wanted && c.state == ChanState::none) {
    // A refused send means the link is going down; on_link_up subscribes it again.
    if (sub_.send(RedisCmd::subscribe, channel, {"SUBSCRIBE", channel}))
      c.state = ChanState::subscribing;
  } else if (!c.wanted && c.state == ChanState::subscribed) {
    if (sub_.send(RedisCmd::unsubscribe, channel, {"UNSUBSCRIBE", channel}))
      c.state = ChanState::unsubscribing;
  }
}

bool RedisBus::xadd(const std::string &stream, uint32_t maxlen,
                    const std::vector<std::pair<std::string, std::string>> &fields) {
  if (!cmd_.up())
    return false;
  std::string maxlen_s = std::to_string(maxlen);
  std::vector<std::string_view> args = {"XADD", stream, "MAXLEN", "~", maxlen_s, "*"};
  args.reserve(args.size() + 2 * fields.size());
  for (const auto &[k, v] : fields) {
    args.push_back(k);
    args.push_back(v);
  }
  return cmd_.send(RedisCmd::xadd, {}, std::span<const std::string_view>(args));
}

size_t RedisBus::subscribed_channels() const {
  size_t n = 0;
  for (const auto &[name, c] : chans_)
    n += c.state == ChanState::subscribed ? 1 : 0;
  return n;
}

size_t RedisBus::refused_channels() const {
  size_t n = 0;
  for (const auto &[name, c] : chans_)
    n += c.wanted && c.state == ChanState::refused ? 1 : 0;
  return n;
}

bool RedisBus::refused(const std::string &channel) const {
  auto it = chans_.find(channel);
  return it != chans_.end() && it->second.wanted && it->second.state == ChanState::refused;
}

std::string RedisBus::last_refusal() const {
  return refused_channels() > 0 ? last_refusal_ : std::string();
}

} // namespace sidecar
