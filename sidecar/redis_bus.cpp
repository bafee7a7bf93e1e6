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

// Errors that pass by themselves: Redis loading its data set after a restart, a script or
// function running too long, a replica that lost its master for a moment.
bool is_transient_error(std::string_view reply) {
  std::string_view word = reply.substr(0, reply.find(' '));
  return word == "LOADING" || word == "BUSY" || word == "MASTERDOWN" || word == "TRYAGAIN";
}

std::string_view text_of(const redisReply *r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                          r->type == REDIS_REPLY_ERROR)
             ? std::string_view(r->str, r->len)
             : std::string_view();
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
  for (const auto &n : names)
    reconcile(n);
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
    subscribe_answered(cmd.channel, reply);
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
            (text_of(reply.element[0]) == "subscribe" || text_of(reply.element[0]) == "ssubscribe");
  if (!ok && reply.type == REDIS_REPLY_ERROR && chan.wanted && !chan.pinned &&
      (text_of(&reply).starts_with("MOVED ") || text_of(&reply).starts_with("ASK "))) {
    // A sharded channel asked of a node that does not own its slot (the topology moved under
    // us): not a refusal to retry here, but a channel the sink must place elsewhere.
    chan.state = ChanState::none;
    sink_.on_subscription_lost(channel);
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
                           ? std::string(text_of(&reply))
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
      text_of(reply.element[0]) == "psubscribe") {
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
             ? std::string(text_of(&reply))
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
  reconcile(channel);
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
  bool idle = c.state == ChanState::none || c.state == ChanState::refused;
  if (!c.want() && idle) {
    chans_.erase(it);
    return;
  }
  if (!sub_.up())
    return;
  if (c.want() && c.state == ChanState::none) {
    // A refused send means the link is going down; on_link_up subscribes it again.
    // Rooms' channels are sharded when configured; the bus's own control channel stays global,
    // where backends PUBLISH their commands.
    bool shard = cfg_.sharded() && !c.pinned;
    if (sub_.send(RedisCmd::subscribe, channel, {shard ? "SSUBSCRIBE" : "SUBSCRIBE", channel}))
      c.state = ChanState::subscribing;
  } else if (!c.want() && c.state == ChanState::subscribed) {
    bool shard = cfg_.sharded() && !c.pinned;
    if (sub_.send(RedisCmd::unsubscribe, channel,
                  {shard ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", channel}))
      c.state = ChanState::unsubscribing;
  }
}

// The pattern is never unsubscribed: it is the bus's for its whole life.
void RedisBus::reconcile_pattern() {
  if (pattern_.empty() || !sub_.up() || pattern_chan_.state != ChanState::none)
    return;
  if (sub_.send(RedisCmd::psubscribe, pattern_, {"PSUBSCRIBE", pattern_}))
    pattern_chan_.state = ChanState::subscribing;
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

// ----------------------------------------------------------------------------- history

void RedisBus::send_function_load() {
  if (cmd_.send(RedisCmd::function_load, {}, {"FUNCTION", "LOAD", "REPLACE", library_})) {
    lib_state_ = LibState::loading;
  } else {
    // The link is going down; the next connection loads it.
    lib_state_ = LibState::waiting;
  }
}

void RedisBus::function_load_answered(const redisReply &reply) {
  if (reply.type != REDIS_REPLY_ERROR) {
    ++function_loads_;
    lib_state_ = LibState::ready;
    log_info("redis_function_loaded", {{"library", "sidecar"},
                                       {"bytes", library_.size()},
                                       {"attempts", load_failures_in_row_ + 1}});
    load_failures_in_row_ = 0;
    lib_transient_ = false;
    history_error_.clear();
    return;
  }
  ++function_load_failures_;
  ++load_failures_in_row_;
  uint64_t delay = redis_backoff_ms(cfg_, load_failures_in_row_);
  load_retry_at_ms_ = uv_now(loop_) + delay;
  std::string text(text_of(&reply));
  // One warning per cause; the retries that follow are debug lines.
  bool news = load_failures_in_row_ == 1 || text != history_error_;
  history_error_ = std::move(text);
  lib_state_ = LibState::failed;
  lib_transient_ = is_transient_error(history_error_);
  log_event(news ? LogConfig::Level::warn : LogConfig::Level::debug, "redis_function_load_failed",
            {{"reply", history_error_},
             {"attempt", load_failures_in_row_},
             {"retry_in_ms", delay},
             {"action", "history reads fail and clients get resync unavailable until it loads; "
                        "retrying with backoff (needs Redis 7 and +function for the redis.url "
                        "user)"}});
  // Reads written after this LOAD get their own error replies; those not yet written fail at
  // the next flush.
  wake_flush();
}

HistoryReadToken RedisBus::read_history(std::string channel, uint64_t from, uint32_t count,
                                        HistoryReadCallback cb) {
  ReadKey key{std::move(channel), from, count};
  if (!history_enabled())
    return refuse_read(std::move(key), std::move(cb), "history is not configured");
  if (lib_refusing())
    return refuse_read(std::move(key), std::move(cb),
                       "the history library is not loaded: " + history_error_);
  HistoryReadToken token = next_id_++;
  if (auto k = keys_.find(key); k != keys_.end() && k->second.collecting != 0) {
    PendingRead &read = reads_.at(k->second.collecting);
    tokens_[token] = {k->second.collecting, read.waiters.size()};
    read.waiters.push_back({token, std::move(cb)});
    ++reads_coalesced_;
    return token;
  }
  if (reads_.size() >= kMaxHistoryReadsInFlight)
    return refuse_read(std::move(key), std::move(cb),
                       "too many history reads in flight (" +
                           std::to_string(kMaxHistoryReadsInFlight) + ")");
  uint64_t id = next_id_++;
  keys_[key].collecting = id;
  PendingRead &read = reads_[id];
  read.key = std::move(key);
  read.asked_ms = uv_now(loop_);
  read.waiters.push_back({token, std::move(cb)});
  tokens_[token] = {id, 0};
  wake_flush();
  return token;
}

HistoryReadToken RedisBus::read_history_shared(std::string channel, uint64_t from, uint32_t count,
                                               HistoryReadCallback cb) {
  if (history_enabled() && !lib_refusing()) {
    ReadKey key{channel, from, count};
    auto k = keys_.find(key);
    if (k != keys_.end() && k->second.collecting == 0 && k->second.sent != 0) {
      // Joins the FCALL on the wire; its waiters only grow until it is answered.
      PendingRead &read = reads_.at(k->second.sent);
      HistoryReadToken token = next_id_++;
      tokens_[token] = {k->second.sent, read.waiters.size()};
      read.waiters.push_back({token, std::move(cb)});
      ++reads_coalesced_;
      return token;
    }
  }
  return read_history(std::move(channel), from, count, std::move(cb));
}

HistoryReadToken RedisBus::refuse_read(ReadKey key, HistoryReadCallback cb, std::string why) {
  HistoryReadToken token = next_id_++;
  uint64_t id = next_id_++;
  PendingRead &read = reads_[id];
  read.key = std::move(key);
  read.asked_ms = uv_now(loop_);
  read.refusal = std::move(why);
  read.waiters.push_back({token, std::move(cb)});
  tokens_[token] = {id, 0};
  wake_flush();
  return token;
}

void RedisBus::cancel_history_read(HistoryReadToken token) {
  auto t = tokens_.find(token);
  if (t == tokens_.end())
    return;
  WaiterAt at = t->second;
  tokens_.erase(t);
  if (auto r = reads_.find(at.read); r != reads_.end())
    r->second.waiters[at.index].cb = nullptr;
  else if (answering_ != nullptr && answering_id_ == at.read && at.index < answering_->size())
    (*answering_)[at.index].cb = nullptr;
}

void RedisBus::wake_flush() {
  if (idle_init_ && !stopping_)
    uv_idle_start(&idle_, &RedisBus::on_idle);
}

void RedisBus::on_idle(uv_idle_t *h) {
  auto *self = static_cast<RedisBus *>(h->data);
  guarded("redis.flush_reads", 0, "reads left waiting fail at their deadline", [&] {
    uv_idle_stop(h);
    self->flush_reads();
  });
}

// Once per loop turn: refusals are answered, and reads that have gathered their waiters are
// written, at most one per key on the wire. What a callback asks from here waits for the next
// turn.
void RedisBus::flush_reads() {
  std::vector<uint64_t> ids;
  ids.reserve(reads_.size());
  for (const auto &[id, read] : reads_) {
    if (!read.sent)
      ids.push_back(id);
  }
  bool sendable = cmd_.up() && (lib_state_ == LibState::loading || lib_state_ == LibState::ready);
  for (uint64_t id : ids) {
    auto it = reads_.find(id);
    if (it == reads_.end() || it->second.sent)
      continue;
    PendingRead &read = it->second;
    if (!read.refusal.empty()) {
      fail_read(id, read.refusal);
      continue;
    }
    bool anyone = false;
    for (const Waiter &w : read.waiters)
      anyone = anyone || static_cast<bool>(w.cb);
    if (!anyone) {
      answer(id, {}); // every waiter left; nobody is called and nothing is sent
      continue;
    }
    if (lib_refusing()) {
      fail_read(id, "the history library is not loaded: " + history_error_);
      continue;
    }
    if (!sendable || keys_[read.key].sent != 0)
      continue;
    if (!send_read(id, read))
      return; // the link is going down; these wait for the next one
  }
}

bool RedisBus::send_read(uint64_t id, PendingRead &read) {
  std::string from = std::to_string(read.key.from);
  std::string count = std::to_string(read.key.count);
  if (!cmd_.send(RedisCmd::fcall, {}, {"FCALL", "sidecar_read", "1", read.key.channel, from, count},
                 id))
    return false;
  read.sent = true;
  ++reads_sent_;
  KeyReads &k = keys_[read.key];
  if (k.collecting == id)
    k.collecting = 0;
  k.sent = id;
  return true;
}

void RedisBus::read_answered(uint64_t id, const redisReply &reply) {
  HistoryReadResult result = parse_history_read(reply);
  if (reply.type == REDIS_REPLY_ERROR) {
    // The library went missing under a live connection (FUNCTION FLUSH or DELETE, a replica
    // promoted without it): load it again at once. Reads already written behind this one fail
    // the same way but find the state `loading`, so this happens once, not once per read.
    if (lib_state_ == LibState::ready &&
        result.error.find("Function not found") != std::string::npos) {
      history_error_ = "the library is missing from Redis (" + result.error + "); loading it again";
      log_warn("redis_function_missing",
               {{"reply", result.error}, {"action", "loading the library again"}});
      send_function_load();
    }
  }
  if (!result.error.empty()) {
    // A storm of reads failing for one cause is one warning; the rest are debug lines.
    bool news = result.error != last_read_error_;
    last_read_error_ = result.error;
    auto it = reads_.find(id);
    log_event(news ? LogConfig::Level::warn : LogConfig::Level::debug, "redis_history_read_failed",
              {{"channel", it != reads_.end() ? std::string_view(it->second.key.channel) : ""},
               {"reply", result.error},
               {"action", "its waiters resync with reason unavailable"}});
  }
  answer(id, result);
}

void RedisBus::fail_read(uint64_t id, const std::string &why) {
  HistoryReadResult result;
  result.error = why;
  answer(id, result);
}

// Every waiter still there is called in the order it asked, each through guarded() so that one
// that throws costs only its own answer. The read leaves the tables first, so a callback that
// asks for the same key again starts a new read instead of joining this finished one.
void RedisBus::answer(uint64_t id, const HistoryReadResult &result) {
  auto it = reads_.find(id);
  if (it == reads_.end())
    return;
  std::vector<Waiter> waiters = std::move(it->second.waiters);
  auto k = keys_.find(it->second.key);
  if (k != keys_.end() && (k->second.collecting == id || k->second.sent == id)) {
    if (k->second.collecting == id)
      k->second.collecting = 0;
    if (k->second.sent == id)
      k->second.sent = 0;
    if (k->second.collecting != 0)
      wake_flush(); // the read waiting behind this one may go now
    else if (k->second.sent == 0)
      keys_.erase(k);
  }
  reads_.erase(it);
  answering_id_ = id;
  answering_ = &waiters;
  // By index: a callback that stops the bus empties `waiters` under this loop.
  for (size_t i = 0; i < waiters.size(); ++i) {
    Waiter &w = waiters[i];
    if (!w.cb)
      continue;
    HistoryReadCallback cb = std::move(w.cb);
    w.cb = nullptr;
    tokens_.erase(w.token);
    guarded("redis.history_read", 0, "this waiter's answer is lost", [&] { cb(result); });
  }
  answering_ = nullptr;
  answering_id_ = 0;
}

} // namespace sidecar
