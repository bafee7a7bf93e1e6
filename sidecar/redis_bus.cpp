// RedisBus; see redis_bus.h.
#include "redis_bus.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <cstring>
#include <random>

#include "log.h"
#include "redis_uv.h"

namespace sidecar {
namespace {

// Every context's data points back at its bus; the Link is found by comparing pointers.
RedisBus *bus_of(const redisAsyncContext *ac) { return static_cast<RedisBus *>(ac->data); }

std::string_view str_of(const redisReply *r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}

uint64_t now_ms(uv_loop_t *loop) { return uv_now(loop); }

} // namespace

RedisBus::RedisBus(uv_loop_t *loop, const RedisConfig &cfg, RedisSink &sink)
    : loop_(loop), cfg_(cfg), sink_(sink) {}

RedisBus::~RedisBus() = default;

int RedisBus::start() {
  int rc = uv_timer_init(loop_, &timer_);
  if (rc != 0)
    return rc;
  timer_init_ = true;
  timer_.data = this;
  // One coarse timer drives retries and connect deadlines for both links.
  rc = uv_timer_start(&timer_, &RedisBus::on_timer, 50, 50);
  if (rc != 0)
    return rc;
  connect(sub_);
  connect(cmd_);
  return 0;
}

void RedisBus::stop() {
  stopping_ = true;
  for (Link *l : {&sub_, &cmd_}) {
    if (l->ac != nullptr)
      redisAsyncDisconnect(l->ac);
  }
  if (timer_init_ && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&timer_))) {
    uv_close(reinterpret_cast<uv_handle_t *>(&timer_), nullptr);
  }
}

RedisBus::Link *RedisBus::link_of(const redisAsyncContext *ac) {
  if (ac == sub_.ac)
    return &sub_;
  if (ac == cmd_.ac)
    return &cmd_;
  return nullptr;
}

void RedisBus::connect(Link &link) {
  link.retry_at_ms = 0;
  redisAsyncContext *ac = cfg_.unix_path.empty() ? redisAsyncConnect(cfg_.host.c_str(), cfg_.port)
                                                 : redisAsyncConnectUnix(cfg_.unix_path.c_str());
  if (ac == nullptr || ac->err != 0) {
    std::string why = ac != nullptr ? ac->errstr : "out of memory";
    if (ac != nullptr)
      redisAsyncFree(ac);
    link_down(link, why);
    return;
  }
  ac->data = this;
  if (redis_attach_uv(ac, loop_) != 0) {
    redisAsyncFree(ac);
    link_down(link, "cannot attach to the event loop");
    return;
  }
  redisAsyncSetConnectCallback(ac, &RedisBus::on_connect);
  redisAsyncSetDisconnectCallback(ac, &RedisBus::on_disconnect);
  link.ac = ac;
  link.connect_deadline_ms = now_ms(loop_) + cfg_.connect_timeout_ms;
  // Commands issued before the connection is up are buffered by hiredis and sent in order.
  if (!cfg_.password.empty()) {
    if (cfg_.username.empty()) {
      redisAsyncCommand(ac, &RedisBus::on_cmd_reply, nullptr, "AUTH %b", cfg_.password.data(),
                        cfg_.password.size());
    } else {
      redisAsyncCommand(ac, &RedisBus::on_cmd_reply, nullptr, "AUTH %b %b", cfg_.username.data(),
                        cfg_.username.size(), cfg_.password.data(), cfg_.password.size());
    }
  }
  if (&link == &cmd_ && cfg_.db != 0) {
    redisAsyncCommand(ac, &RedisBus::on_cmd_reply, nullptr, "SELECT %d", cfg_.db);
  }
}

void RedisBus::on_connect(const redisAsyncContext *ac, int status) {
  RedisBus *self = bus_of(ac);
  Link *link = self->link_of(ac);
  if (link == nullptr)
    return;
  if (status != REDIS_OK) {
    // hiredis frees the context itself after a failed connect.
    link->ac = nullptr;
    self->link_down(*link, ac->errstr);
    return;
  }
  link->up = true;
  link->connect_deadline_ms = 0;
  if (link->failures > 0)
    ++self->reconnects_;
  link->failures = 0;
  log_info("redis_connected",
           {{"link", link->name},
            {"addr", self->cfg_.unix_path.empty()
                         ? self->cfg_.host + ":" + std::to_string(self->cfg_.port)
                         : self->cfg_.unix_path}});
  if (link == &self->sub_) {
    // Every channel a room still wants is subscribed again on the new connection.
    for (auto &[name, chan] : self->chans_) {
      chan.state = ChanState::none;
    }
    std::vector<std::string> names;
    names.reserve(self->chans_.size());
    for (auto &[name, chan] : self->chans_)
      names.push_back(name);
    for (const auto &n : names)
      self->reconcile(n);
    self->sink_.on_redis_state(true);
  }
}

void RedisBus::on_disconnect(const redisAsyncContext *ac, int status) {
  RedisBus *self = bus_of(ac);
  Link *link = self->link_of(ac);
  if (link == nullptr)
    return;
  // hiredis frees the context after this callback returns.
  link->ac = nullptr;
  std::string why = status == REDIS_OK ? "disconnected" : (ac->errstr[0] ? ac->errstr : "error");
  self->link_down(*link, why);
}

void RedisBus::link_down(Link &link, const std::string &why) {
  bool was_up = link.up;
  link.up = false;
  link.connect_deadline_ms = 0;
  last_error_ = why;
  if (&link == &sub_) {
    for (auto it = chans_.begin(); it != chans_.end();) {
      it->second.state = ChanState::none;
      it = it->second.wanted ? std::next(it) : chans_.erase(it);
    }
    // A disconnect we asked for at shutdown is not an outage.
    if (was_up && !stopping_)
      sink_.on_redis_state(false);
  }
  if (stopping_)
    return;
  if (was_up || link.failures == 0) {
    log_warn("redis_down", {{"link", link.name},
                            {"reason", why},
                            {"action", "clients stay connected; reconnecting with backoff"}});
  } else {
    log_debug("redis_retry_failed", {{"link", link.name}, {"reason", why}});
  }
  schedule_retry(link);
}

void RedisBus::schedule_retry(Link &link) {
  ++link.failures;
  uint64_t delay = cfg_.reconnect_initial_ms;
  for (uint32_t i = 1; i < link.failures && delay < cfg_.reconnect_max_ms; ++i)
    delay *= 2;
  if (delay > cfg_.reconnect_max_ms)
    delay = cfg_.reconnect_max_ms;
  // +-20 % jitter, so that many sidecars do not hit a restarted Redis in the same millisecond.
  static std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  link.retry_at_ms =
      now_ms(loop_) + static_cast<uint64_t>(static_cast<double>(delay) * jitter(rng));
}

void RedisBus::on_timer(uv_timer_t *t) { static_cast<RedisBus *>(t->data)->tick(); }

void RedisBus::tick() {
  if (stopping_)
    return;
  uint64_t now = now_ms(loop_);
  for (Link *l : {&sub_, &cmd_}) {
    if (l->ac == nullptr && l->retry_at_ms != 0 && now >= l->retry_at_ms) {
      connect(*l);
    } else if (l->ac != nullptr && !l->up && l->connect_deadline_ms != 0 &&
               now >= l->connect_deadline_ms) {
      // A connect that hangs (a black-holed address) is abandoned. We are in a timer callback,
      // not inside hiredis, so freeing the context here is allowed.
      redisAsyncContext *ac = l->ac;
      l->ac = nullptr;
      redisAsyncFree(ac);
      link_down(*l, "connect timed out");
    }
  }
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
// is compared with what rooms want again. This keeps a quick leave-and-rejoin from racing
// hiredis's per-channel callback table.
void RedisBus::reconcile(const std::string &channel) {
  auto it = chans_.find(channel);
  if (it == chans_.end())
    return;
  Chan &c = it->second;
  if (!sub_.up || sub_.ac == nullptr) {
    if (!c.wanted)
      chans_.erase(it);
    return;
  }
  if (c.wanted && c.state == ChanState::none) {
    c.state = ChanState::subscribing;
    redisAsyncCommand(sub_.ac, &RedisBus::on_sub_reply, this, "SUBSCRIBE %b", channel.data(),
                      channel.size());
  } else if (!c.wanted && c.state == ChanState::subscribed) {
    c.state = ChanState::unsubscribing;
    redisAsyncCommand(sub_.ac, &RedisBus::on_sub_reply, this, "UNSUBSCRIBE %b", channel.data(),
                      channel.size());
  } else if (!c.wanted && c.state == ChanState::none) {
    chans_.erase(it);
  }
}

void RedisBus::on_sub_reply(redisAsyncContext *ac, void *r, void *priv) {
  auto *self = static_cast<RedisBus *>(priv);
  auto *reply = static_cast<redisReply *>(r);
  // A null reply means hiredis is tearing the context down; the disconnect callback follows.
  if (reply == nullptr || self == nullptr || ac != self->sub_.ac)
    return;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
    if (reply->type == REDIS_REPLY_ERROR) {
      log_error("redis_error", {{"reply", std::string(reply->str, reply->len)},
                                {"action", "check redis.url credentials and ACLs"}});
    }
    return;
  }
  std::string_view kind = str_of(reply->element[0]);
  std::string_view channel = str_of(reply->element[1]);
  if (kind == "message") {
    const redisReply *payload = reply->element[2];
    self->sink_.on_redis_message(channel, std::string_view(payload->str, payload->len));
    return;
  }
  auto it = self->chans_.find(std::string(channel));
  if (it == self->chans_.end())
    return;
  if (kind == "subscribe") {
    it->second.state = ChanState::subscribed;
  } else if (kind == "unsubscribe") {
    it->second.state = ChanState::none;
  }
  self->reconcile(it->first);
}

void RedisBus::on_cmd_reply(redisAsyncContext *, void *r, void *) {
  auto *reply = static_cast<redisReply *>(r);
  if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
    log_error("redis_error", {{"reply", std::string(reply->str, reply->len)},
                              {"action", "check redis.url credentials, ACLs and the stream key"}});
  }
}

bool RedisBus::xadd(const std::string &stream, uint32_t maxlen,
                    const std::vector<std::pair<std::string, std::string>> &fields) {
  if (!cmd_.up || cmd_.ac == nullptr)
    return false;
  std::string maxlen_s = std::to_string(maxlen);
  std::vector<const char *> argv = {"XADD", stream.c_str(), "MAXLEN", "~", maxlen_s.c_str(), "*"};
  std::vector<size_t> lens = {4, stream.size(), 6, 1, maxlen_s.size(), 1};
  for (const auto &[k, v] : fields) {
    argv.push_back(k.data());
    lens.push_back(k.size());
    argv.push_back(v.data());
    lens.push_back(v.size());
  }
  return redisAsyncCommandArgv(cmd_.ac, &RedisBus::on_cmd_reply, nullptr,
                               static_cast<int>(argv.size()), argv.data(), lens.data()) == REDIS_OK;
}

size_t RedisBus::subscribed_channels() const {
  size_t n = 0;
  for (const auto &[name, c] : chans_)
    n += c.state == ChanState::subscribed ? 1 : 0;
  return n;
}

} // namespace sidecar
