// PresenceSync; see presence_sync.h.
#include "presence_sync.h"

#include <hiredis/hiredis.h>

#include "config.h"
#include "guard.h"
#include "log.h"

namespace sidecar {
namespace {

// Joins and leaves within one tick are one FCALL per room: a reconnect storm of thousands of
// sessions is a handful of commands, and a join is visible in Redis within about this long.
constexpr uint64_t kTickMs = 100;

} // namespace

PresenceSync::PresenceSync(uv_loop_t *loop, MessageBus &bus, std::vector<PresenceConfig> list)
    : loop_(loop), bus_(bus), book_(std::move(list)) {}

PresenceSync::~PresenceSync() = default;

int PresenceSync::start(std::string sidecar_id) {
  if (!enabled())
    return 0;
  sidecar_id_ = std::move(sidecar_id);
  int rc = uv_timer_init(loop_, &timer_);
  if (rc != 0)
    return rc;
  timer_init_ = true;
  timer_.data = this;
  return uv_timer_start(&timer_, &PresenceSync::on_timer, kTickMs, kTickMs);
}

void PresenceSync::stop() {
  if (timer_init_ && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t *>(&timer_), nullptr);
  up_ = false;
  pending_.clear();
}

// Only the route's room channel: "org:{org}" also matches the user channel "org:acme:user:bob"
// (a placeholder may hold ':'), and a per-user channel has one member by construction.
bool PresenceSync::join(const UpgradeGrant &g) {
  if (!enabled() || g.user.empty() || g.room_channel.empty())
    return false;
  const PresenceConfig *c = find_presence(config(), g.room_channel);
  if (c == nullptr)
    return false;
  book_.join(g.room_channel, g.user,
             c->events.empty() ? "" : expand_channel(c->events, g.org, g.user));
  return true;
}

void PresenceSync::leave(const std::string &room_channel, const std::string &user) {
  book_.leave(room_channel, user);
}

void PresenceSync::on_timer(uv_timer_t *t) {
  auto *self = static_cast<PresenceSync *>(t->data);
  guarded("presence.tick", 0, "trying again at the next tick", [&] { self->tick(); });
}

void PresenceSync::tick() {
  if (!up_)
    return; // nothing queues while Redis is away; the link's return sends every room in full
  for (PresenceBatch &b : book_.take_batches(uv_now(loop_))) {
    std::string ttl = std::to_string(b.ttl_ms);
    std::vector<std::string> counts;
    counts.reserve(b.users.size());
    std::vector<std::string_view> args = {
        "FCALL",  "sidecar_presence",       "1", b.channel, sidecar_id_, ttl,
        b.events, b.full ? "full" : "delta"};
    args.reserve(args.size() + 2 * b.users.size());
    for (const auto &[user, n] : b.users) {
      counts.push_back(std::to_string(n));
      args.push_back(user);
      args.push_back(counts.back());
    }
    uint64_t tag = next_tag_++;
    if (!bus_.presence_send(args, tag)) {
      // The link is going down; on_presence_link(false) marks every room for a full resend.
      ++write_failures_;
      book_.resend(b.channel);
      continue;
    }
    ++writes_sent_;
    pending_[tag].channel = std::move(b.channel);
  }
}

bool PresenceSync::read(const std::string &channel, PresenceReadCallback cb) {
  if (!up_)
    return false;
  uint64_t tag = next_tag_++;
  if (!bus_.presence_send({"FCALL_RO", "sidecar_presence_read", "1", channel}, tag))
    return false;
  pending_[tag].cb = std::move(cb);
  return true;
}

void PresenceSync::on_presence_link(bool up) {
  std::map<uint64_t, Pending> lost = std::move(pending_);
  pending_.clear();
  up_ = false;
  book_.resend_all();
  for (auto &[tag, p] : lost) {
    if (p.cb) {
      PresenceReadCallback cb = std::move(p.cb);
      guarded("presence.read", 0, "this read's answer is lost",
              [&] { cb(Result<PresenceUsers>::fail("the Redis command link dropped")); });
    } else if (tag != 0) {
      ++write_failures_;
    }
  }
  if (!up || !enabled())
    return;
  // Commands on one connection run in order, so every FCALL written after the LOAD finds it.
  if (bus_.presence_send({"FUNCTION", "LOAD", "REPLACE", presence_library()}, 0)) {
    pending_[0] = {};
    up_ = true;
  }
}

void PresenceSync::on_presence_reply(uint64_t tag, const redisReply &reply) {
  auto it = pending_.find(tag);
  if (it == pending_.end())
    return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  bool error = reply.type == REDIS_REPLY_ERROR;
  if (error) {
    std::string text(reply_text(&reply));
    if (text != last_error_) {
      log_warn("redis_presence_failed",
               {{"command", tag == 0 ? "FUNCTION LOAD"
                            : p.cb   ? "FCALL_RO"
                                     : "FCALL"},
                {"reply", text},
                {"action", "presence in Redis is stale until this passes; retrying every tick "
                           "(needs Redis 7 and +function for the redis.url user)"}});
    }
    last_error_ = std::move(text);
  } else if (tag != 0 && !p.cb) {
    last_error_.clear();
  }
  if (tag == 0)
    return; // a refused LOAD shows in every FCALL behind it
  if (p.cb) {
    if (error) {
      p.cb(Result<PresenceUsers>::fail(last_error_));
      return;
    }
    PresenceUsers users;
    if (reply.type == REDIS_REPLY_ARRAY) {
      for (size_t i = 0; i + 1 < reply.elements; i += 2) {
        const redisReply *u = reply.element[i];
        const redisReply *n = reply.element[i + 1];
        if (u->type == REDIS_REPLY_STRING && n->type == REDIS_REPLY_INTEGER && n->integer > 0)
          users.emplace_back(std::string(u->str, u->len), static_cast<uint64_t>(n->integer));
      }
    }
    p.cb(users);
    return;
  }
  bool ok = !error && reply.type == REDIS_REPLY_ARRAY && reply.elements == 3 &&
            reply.element[0]->type == REDIS_REPLY_INTEGER;
  if (!ok) {
    ++write_failures_;
    book_.resend(p.channel);
    // The library went missing under a live connection (FUNCTION FLUSH, a failover): load it
    // again, once for all the FCALLs failing behind this one.
    bool missing = error && reply_text(&reply).find("Function not found") != std::string_view::npos;
    if (missing && pending_.count(0) == 0 &&
        bus_.presence_send({"FUNCTION", "LOAD", "REPLACE", presence_library()}, 0))
      pending_[0] = {};
    return;
  }
  if (reply.element[0]->integer == 0) {
    book_.resend(p.channel); // our fields had expired: tell Redis everything again
    return;
  }
  for (size_t i = 1; i < 3; ++i) {
    if (reply.element[i]->type == REDIS_REPLY_INTEGER && reply.element[i]->integer > 0)
      events_ += static_cast<uint64_t>(reply.element[i]->integer);
  }
}

} // namespace sidecar
