// RedisBus; see redis_bus.h.
#include "redis_bus.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <span>

#include "cluster_slot.h"
#include "guard.h"
#include "log.h"

namespace sidecar {
namespace {

// Channels named by one SUBSCRIBE or SSUBSCRIBE (flush_subscribes).
constexpr size_t kSubscribeBatch = 100;

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

} // namespace

RedisBus::RedisBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink,
                   std::vector<HistoryConfig> history)
    : loop_(loop), cfg_(cfg), sink_(sink), sub_(loop, cfg_, "subscriber", true, *this),
      cmd_(loop, cfg_, "command", false, *this) {
  for (const char *code : kErrorCodes)
    subscribe_errors_[code] = 0;
  if (!history.empty()) {
    library_ = history_library(history, cfg_.sharded());
    lib_state_ = LibState::waiting;
  }
}

RedisBus::~RedisBus() = default;

void RedisBus::set_control_channel(std::string channel) {
  control_ = std::move(channel);
  if (!control_.empty()) {
    chans_[control_].pinned = true;
    reconcile(control_);
  }
}

void RedisBus::set_connection_pattern(std::string pattern) {
  pattern_ = std::move(pattern);
  pattern_chan_.pinned = !pattern_.empty();
  reconcile_pattern();
}

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
  rc = uv_idle_init(loop_, &idle_);
  if (rc != 0)
    return rc;
  idle_init_ = true;
  idle_.data = this;
  if (!reads_.empty())
    wake_flush();
  started_ = true;
  if (!sub_on_demand_ || !chans_.empty() || !pattern_.empty())
    start_subscriber();
  cmd_.start();
  return 0;
}

void RedisBus::stop() {
  stopping_ = true;
  sub_.stop();
  cmd_.stop();
  if (timer_init_ && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t *>(&timer_), nullptr);
  if (idle_init_ && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&idle_)))
    uv_close(reinterpret_cast<uv_handle_t *>(&idle_), nullptr);
  reads_.clear();
  keys_.clear();
  tokens_.clear();
  if (answering_ != nullptr)
    answering_->clear();
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
  if (lib_state_ == LibState::failed && cmd_.up() && now >= load_retry_at_ms_)
    send_function_load();
  if (!reads_.empty()) {
    // A read that cannot be sent (the command link down, or up but its library not loaded)
    // waits as long as a sent command waits for its reply, then fails.
    bool sendable = cmd_.up() && (lib_state_ == LibState::loading || lib_state_ == LibState::ready);
    std::vector<uint64_t> expired;
    for (const auto &[id, read] : reads_) {
      if (!read.sent && read.refusal.empty() && !sendable &&
          now - read.asked_ms >= cfg_.reply_timeout_ms)
        expired.push_back(id);
    }
    if (!expired.empty()) {
      std::string cause =
          cmd_.up()
              ? "the history library is not loaded yet (" + history_error_ + ")"
              : "the Redis command link is down (" +
                    (cmd_.last_error().empty() ? std::string("connecting") : cmd_.last_error()) +
                    ")";
      std::string why = cause + "; waited " + std::to_string(cfg_.reply_timeout_ms) +
                        " ms (redis.reply_timeout_ms)";
      for (uint64_t id : expired)
        fail_read(id, why);
    }
  }
  std::vector<std::string> due;
  for (auto &[name, chan] : chans_) {
    if (chan.state == ChanState::refused && now >= chan.retry_at_ms)
      due.push_back(name);
  }
  for (const auto &name : due) {
    chans_[name].state = ChanState::none;
    reconcile(name);
  }
  if (pattern_chan_.state == ChanState::refused && now >= pattern_chan_.retry_at_ms) {
    pattern_chan_.state = ChanState::none;
    reconcile_pattern();
  }
}

void RedisBus::on_link_up(RedisLink &link) {
  if (&link == &cmd_) {
    // The library goes first: every read written on this connection is queued behind it.
    if (history_enabled()) {
      send_function_load();
      wake_flush();
    }
    if (presence_ != nullptr)
      presence_->on_presence_link(true);
    return;
  }
  bool returned = sub_was_up_;
  sub_was_up_ = true;
  if (returned)
    sink_.on_subscriber_reconnected();
  // Every channel a room still wants is subscribed again on the new connection.
  std::vector<std::string> names;
  names.reserve(chans_.size());
  for (auto &[name, chan] : chans_) {
    chan.state = ChanState::none;
    names.push_back(name);
  }
  hold_subscribes();
  for (const auto &n : names)
    reconcile(n);
  release_subscribes();
  pattern_chan_.state = ChanState::none;
  reconcile_pattern();
  sink_.on_redis_state(true);
}

void RedisBus::on_link_down(RedisLink &link, bool was_up) {
  last_error_ = link.last_error();
  if (&link == &cmd_) {
    if (presence_ != nullptr)
      presence_->on_presence_link(false);
    if (history_enabled())
      lib_state_ = LibState::waiting;
    // What was written on the dropped connection will never be answered. Reads not yet
    // written wait for the next connection.
    std::vector<uint64_t> lost;
    for (const auto &[id, read] : reads_) {
      if (read.sent)
        lost.push_back(id);
    }
    std::string why =
        "the Redis command link dropped with the read in flight: " + link.last_error();
    for (uint64_t id : lost)
      fail_read(id, why);
    return;
  }
  for (auto it = chans_.begin(); it != chans_.end();) {
    it->second.state = ChanState::none;
    it = it->second.want() ? std::next(it) : chans_.erase(it);
  }
  pattern_chan_.state = ChanState::none;
  // A disconnect we asked for at shutdown is not an outage.
  if (was_up && !stopping_)
    sink_.on_redis_state(false);
}

void RedisBus::on_link_message(std::string_view pattern, std::string_view channel,
                               std::string_view payload) {
  if (!pattern.empty()) {
    // Only our own pattern is ever PSUBSCRIBEd; a pmessage for another was left over from a
    // connection we no longer speak for, and is dropped.
    if (pattern == pattern_)
      sink_.on_connection_message(channel, payload);
    return;
  }
  // The control channel never reaches a room, even one that happens to share its name: its
  // commands (and signatures) are not for clients to read.
  if (!control_.empty() && channel == control_) {
    sink_.on_control_message(payload);
    return;
  }
  sink_.on_redis_message(channel, payload);
}

// Redis ended a sharded subscription by itself: the channel's slot left this node (resharding,
// or a failover that made this node a replica). The channel is no longer subscribed here; the
// sink decides whether it is subscribed again here or elsewhere.
void RedisBus::on_link_shard_unsubscribed(std::string_view channel) {
  auto it = chans_.find(std::string(channel));
  if (it == chans_.end() || it->second.state != ChanState::subscribed)
    return;
  it->second.state = ChanState::none;
  std::string name(channel);
  log_info("redis_shard_unsubscribed",
           {{"channel", name}, {"action", "finding the shard that owns it now"}});
  sink_.on_subscription_lost(name);
  reconcile(name);
}

void RedisBus::on_link_reply(RedisLink &, const RedisPending &cmd, const redisReply &reply) {
  switch (cmd.cmd) {
  case RedisCmd::subscribe:
    subscribe_answered(cmd.channel, reply, cmd.batched);
    return;
  case RedisCmd::psubscribe:
    psubscribe_answered(reply);
    return;
  case RedisCmd::function_load:
    function_load_answered(reply);
    return;
  case RedisCmd::fcall:
    read_answered(cmd.tag, reply);
    return;
  case RedisCmd::presence:
    if (presence_ != nullptr)
      presence_->on_presence_reply(cmd.tag, reply);
    return;
  case RedisCmd::xadd:
    if (cmd.tag != 0) {
      sink_.on_xadd_answered(cmd.tag, reply);
      return;
    }
    break; // an error is logged below
  case RedisCmd::unsubscribe:
    if (auto it = chans_.find(cmd.channel); it != chans_.end()) {
      if (reply.type == REDIS_REPLY_ERROR) {
        // Still subscribed, then: its messages count as unrouted until a room wants it again.
        log_warn("redis_unsubscribe_refused",
                 {{"channel", cmd.channel}, {"reply", reply_text(&reply)}, {"action", "ignored"}});
      }
      it->second.state = ChanState::none;
      reconcile(cmd.channel);
    }
    return;
  default:
    break;
  }
  if (reply.type == REDIS_REPLY_ERROR) {
    log_error("redis_error", {{"command", redis_cmd_name(cmd.cmd)},
                              {"reply", reply_text(&reply)},
                              {"action", "check redis.url credentials, ACLs and the stream key"}});
  }
}

void RedisBus::subscribe_answered(const std::string &channel, const redisReply &reply,
                                  bool batched) {
  auto it = chans_.find(channel);
  if (it == chans_.end())
    return;
  Chan &chan = it->second;
  bool ok =
      reply.type == REDIS_REPLY_ARRAY && reply.elements == 3 &&
      (reply_text(reply.element[0]) == "subscribe" || reply_text(reply.element[0]) == "ssubscribe");
  if (!ok && reply.type == REDIS_REPLY_ERROR && chan.wanted && !chan.pinned &&
      (reply_text(&reply).starts_with("MOVED ") || reply_text(&reply).starts_with("ASK "))) {
    // A sharded channel asked of a node that does not own its slot (the topology moved under
    // us): not a refusal to retry here, but a channel the sink must place elsewhere.
    chan.state = ChanState::none;
    sink_.on_subscription_lost(channel);
    reconcile(channel);
    return;
  }
  if (!ok && batched && !chan.alone && reply.type == REDIS_REPLY_ERROR) {
    // Refused with the others of its command: it may be one of them that Redis refuses. Each is
    // sent again on its own, and a refusal of its own counts from there.
    chan.alone = true;
    chan.state = ChanState::none;
    reconcile(channel);
    return;
  }
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
                           ? std::string(reply_text(&reply))
                           : "unexpected reply of type " + std::to_string(reply.type);
    refuse(chan, channel, std::move(text));
  }
  reconcile(channel);
  // Told last, when the bus is consistent: the sink may subscribe or unsubscribe from here.
  if (ok && subscribed(channel))
    sink_.on_subscribed(channel);
}

void RedisBus::psubscribe_answered(const redisReply &reply) {
  if (reply.type == REDIS_REPLY_ARRAY && reply.elements == 3 &&
      reply_text(reply.element[0]) == "psubscribe") {
    pattern_chan_.state = ChanState::subscribed;
    if (pattern_chan_.refusals > 0) {
      log_info("redis_subscribe_recovered",
               {{"pattern", pattern_}, {"attempts", pattern_chan_.refusals + 1}});
      pattern_chan_.refusals = 0;
      pattern_chan_.reply.clear();
    }
    return;
  }
  refuse(pattern_chan_, pattern_,
         reply.type == REDIS_REPLY_ERROR
             ? std::string(reply_text(&reply))
             : "unexpected reply of type " + std::to_string(reply.type));
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
             {"action", !chan.pinned ? "this room receives nothing until Redis accepts; retrying "
                                       "with backoff (grant the channel to the redis.url user or "
                                       "fix Redis)"
                        : &chan == &pattern_chan_
                            ? "messages to this sidecar's connection channels are lost until "
                              "Redis accepts; retrying with backoff (grant the pattern to the "
                              "redis.url user or fix Redis)"
                            : "control commands do not reach this sidecar until Redis accepts; "
                              "retrying with backoff (grant the channel to the redis.url user "
                              "or fix Redis)"}});
}

void RedisBus::subscribe(const std::string &channel) {
  chans_[channel].wanted = true;
  if (started_ && !stopping_)
    start_subscriber();
  reconcile(channel);
}

void RedisBus::start_subscriber() {
  if (sub_started_)
    return;
  sub_started_ = true;
  sub_.start();
}

void RedisBus::unsubscribe(const std::string &channel) {
  auto it = chans_.find(channel);
  // A room that shares the control channel's name leaves the subscription to the bus (pinned).
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
  bool idle =
      c.state == ChanState::none || c.state == ChanState::refused || c.state == ChanState::queued;
  if (!c.want() && idle) {
    chans_.erase(it); // a queued name left behind is skipped by flush_subscribes
    return;
  }
  if (!sub_.up())
    return;
  if (c.want() && c.state == ChanState::none) {
    if (hold_ > 0) {
      // Sent with the others when the hold ends (a reconnect, a new topology): thousands of
      // rooms in a few commands rather than one each.
      c.state = ChanState::queued;
      queued_.push_back(channel);
    } else {
      // One room at a time (a client joins) goes at once: its SUBSCRIBE is on the wire before
      // the welcome, so a PUBLISH the client's backend makes after the welcome reaches it.
      // A refused send means the link is going down; on_link_up subscribes it again.
      bool shard = cfg_.sharded() && !c.pinned;
      if (sub_.send(RedisCmd::subscribe, channel, {shard ? "SSUBSCRIBE" : "SUBSCRIBE", channel}))
        c.state = ChanState::subscribing;
    }
  } else if (!c.want() && c.state == ChanState::subscribed) {
    bool shard = cfg_.sharded() && !c.pinned;
    if (sub_.send(RedisCmd::unsubscribe, channel,
                  {shard ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", channel}))
      c.state = ChanState::unsubscribing;
  }
}

void RedisBus::release_subscribes() {
  if (hold_ > 0 && --hold_ == 0)
    flush_subscribes();
}

// The channels queued during a hold, in commands of at most kSubscribeBatch channels. Rooms'
// channels are sharded when configured, and one SSUBSCRIBE may only name channels of one slot;
// the bus's own control channel stays global, where backends PUBLISH their commands. A channel
// whose batch was refused whole goes alone, so that one forbidden channel cannot keep the others
// of its batch deaf. A refused send means the link is going down; on_link_up queues them again.
void RedisBus::flush_subscribes() {
  if (queued_.empty())
    return;
  std::vector<std::string> names = std::move(queued_);
  queued_.clear();
  std::map<int32_t, std::vector<std::string>> groups; // by slot; -1 for SUBSCRIBE
  for (std::string &name : names) {
    auto it = chans_.find(name);
    if (it == chans_.end() || it->second.state != ChanState::queued)
      continue; // left, or queued twice
    Chan &c = it->second;
    c.state = ChanState::none;
    if (!sub_.up())
      continue;
    bool shard = cfg_.sharded() && !c.pinned;
    if (c.alone) {
      if (sub_.send(RedisCmd::subscribe, name, {shard ? "SSUBSCRIBE" : "SUBSCRIBE", name}))
        c.state = ChanState::subscribing;
      continue;
    }
    c.state = ChanState::subscribing; // the batch it joins is sent below
    groups[shard ? static_cast<int32_t>(cluster_slot(name)) : -1].push_back(std::move(name));
  }
  for (auto &[slot, group] : groups) {
    std::string_view verb = slot < 0 ? "SUBSCRIBE" : "SSUBSCRIBE";
    for (size_t at = 0; at < group.size(); at += kSubscribeBatch) {
      std::span<const std::string> part(group.data() + at,
                                        std::min(kSubscribeBatch, group.size() - at));
      if (sub_.send_batch(RedisCmd::subscribe, verb, part))
        continue;
      for (const std::string &name : part) {
        if (auto it = chans_.find(name); it != chans_.end())
          it->second.state = ChanState::none;
      }
    }
  }
}

// The pattern is never unsubscribed: it is the bus's for its whole life.
void RedisBus::reconcile_pattern() {
  if (pattern_.empty() || !sub_.up() || pattern_chan_.state != ChanState::none)
    return;
  if (sub_.send(RedisCmd::psubscribe, pattern_, {"PSUBSCRIBE", pattern_}))
    pattern_chan_.state = ChanState::subscribing;
}

bool RedisBus::send_xadd(const std::string &stream, uint32_t maxlen,
                         const std::vector<std::pair<std::string, std::string>> &fields,
                         uint64_t tag, bool asking) {
  if (!cmd_.up())
    return false;
  // ASKING holds for the next command on this connection only, which the pipeline makes the XADD.
  if (asking && !cmd_.send(RedisCmd::asking, {}, {"ASKING"}))
    return false;
  std::string maxlen_s = std::to_string(maxlen);
  std::vector<std::string_view> args = {"XADD", stream, "MAXLEN", "~", maxlen_s, "*"};
  args.reserve(args.size() + 2 * fields.size());
  for (const auto &[k, v] : fields) {
    args.push_back(k);
    args.push_back(v);
  }
  return cmd_.send(RedisCmd::xadd, {}, std::span<const std::string_view>(args), tag);
}

size_t RedisBus::subscribed_channels() const {
  size_t n = pattern_chan_.state == ChanState::subscribed ? 1 : 0;
  for (const auto &[name, c] : chans_)
    n += c.state == ChanState::subscribed ? 1 : 0;
  return n;
}

bool RedisBus::subscribed(const std::string &channel) const {
  auto it = chans_.find(channel);
  return it != chans_.end() && it->second.want() && it->second.state == ChanState::subscribed;
}

size_t RedisBus::refused_channels() const {
  size_t n = pattern_chan_.state == ChanState::refused ? 1 : 0;
  for (const auto &[name, c] : chans_)
    n += c.want() && c.state == ChanState::refused ? 1 : 0;
  return n;
}

bool RedisBus::refused(const std::string &channel) const {
  auto it = chans_.find(channel);
  return it != chans_.end() && it->second.want() && it->second.state == ChanState::refused;
}

std::string RedisBus::last_refusal() const {
  return refused_channels() > 0 ? last_refusal_ : std::string();
}

} // namespace sidecar
