// PresenceSync: the Redis-facing half of presence (issue 15). It keeps a PresenceBook of the
// sessions here, and every 100 ms sends the book's batches on the bus's command link, one
// FCALL sidecar_presence per room that changed or is due its renewal (ttl/3). It loads the
// sidecar_presence library on every command connect and answers /api/presence reads.
//
// Redis down: nothing is queued. Batches are taken only while the link is up; when it comes back
// every room is sent in full, so the state in Redis is right again after one FCALL per room.
// A batch that fails (an error reply, the link dropping with it in flight) or that Redis calls
// stale has its room sent in full at the next tick.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "admission.h"
#include "presence.h"
#include "redis_bus.h"
#include "result.h"

namespace sidecar {

using PresenceUsers = std::vector<std::pair<std::string, uint64_t>>; // user, connections
using PresenceReadCallback = std::function<void(const Result<PresenceUsers> &)>;

class PresenceSync final : public PresenceLink {
public:
  PresenceSync(uv_loop_t *loop, MessageBus &bus, std::vector<PresenceConfig> list);
  PresenceSync(const PresenceSync &) = delete;
  PresenceSync &operator=(const PresenceSync &) = delete;
  ~PresenceSync();

  bool enabled() const { return book_.enabled(); }
  const std::vector<PresenceConfig> &config() const { return book_.config(); }
  // `sidecar_id` names this process in the hash fields; it must not contain '|'. Starts the
  // tick; a uv error or 0. Does nothing when presence is off.
  int start(std::string sidecar_id);
  void stop(); // closes the timer; replies still to come are ignored, reads are not answered

  // A session with this grant enters its room channel: counted when a presence template matches
  // it and the grant has a user (anonymous connections are not tracked). True when counted; only
  // then does the session call leave, with that channel and user, when it goes.
  bool join(const UpgradeGrant &g);
  void leave(const std::string &room_channel, const std::string &user);

  // Totals over every live sidecar; cb is called later, from a reply or a link drop, never from
  // inside read(). False (and cb never called) when the command link is down.
  bool read(const std::string &channel, PresenceReadCallback cb);

  uint64_t writes_sent() const { return writes_sent_; }       // FCALL sidecar_presence written
  uint64_t write_failures() const { return write_failures_; } // error replies, lost in a drop
  uint64_t events() const { return events_; }                 // join/leave published by ours
  size_t rooms() const { return book_.rooms(); }

  // PresenceLink, from the bus.
  void on_presence_link(bool up) override;
  void on_presence_reply(uint64_t tag, const redisReply &reply) override;

private:
  static void on_timer(uv_timer_t *t);
  void tick();
  struct Pending {
    std::string channel;     // a batch's room
    PresenceReadCallback cb; // a read's waiter; empty for a batch
  };

  uv_loop_t *loop_;
  MessageBus &bus_;
  PresenceBook book_;
  std::string sidecar_id_;
  uv_timer_t timer_{};
  bool timer_init_ = false;
  bool up_ = false; // the command link is up and the library was sent on it
  uint64_t next_tag_ = 1;
  std::map<uint64_t, Pending> pending_; // by tag; tag 0 is the library load
  uint64_t writes_sent_ = 0;
  uint64_t write_failures_ = 0;
  uint64_t events_ = 0;
  std::string last_error_; // logged once per change
};

} // namespace sidecar
