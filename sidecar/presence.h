// Presence (issue 15): who is in a room right now, across every sidecar on one Redis. This file
// is the pure half: the `presence:` config and its checks, the Redis Function library, and
// PresenceBook, the local bookkeeping (room -> user -> connections here) that turns joins and
// leaves into batches, one FCALL per room. presence_sync.h sends them.
//
// In Redis a room is one hash, `sidecar:{<channel>}:presence` (the whole channel is the hash tag,
// as for the history keys, so a Cluster keeps it in the channel's slot):
//   <sidecar>|<user> -> the connections of <user> in the room on that sidecar
//   <sidecar>        -> until when (ms, Redis's clock) that sidecar's fields count
// Redis 7.0 has no per-field expiry, so each sidecar renews its own `<sidecar>` field every
// ttl/3; fields of a sidecar whose time has passed are ignored by every read and deleted by the
// next update any sidecar makes to the room. The key's own TTL removes a room nobody renews.
// `sidecar:{<channel>}:presence:idx` maps each sidecar with users there to how many, so that an
// update reads only the users in its batch and the room's sidecars, never every member.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sidecar {

struct PresenceConfig {
  std::string channel_template; // "org:{org}": rooms whose members are tracked
  uint32_t ttl_s = 30;          // a sidecar that stops renewing is forgotten after this long
  std::string events;           // "org:{org}:presence": join/leave published here; "" none
  bool operator==(const PresenceConfig &) const = default;
};

inline constexpr uint32_t kMaxPresenceTtlS = 86400;

struct PresenceProblem {
  size_t index;    // into the list
  std::string key; // "channel", "ttl_s", "events"
  std::string reason;
};
// Bad templates, a template twice, ttl_s out of range, events using a placeholder that its
// channel template does not bind.
std::vector<PresenceProblem> check_presence(const std::vector<PresenceConfig> &list);
// The first entry whose template matches `channel`; nullptr when none does.
const PresenceConfig *find_presence(const std::vector<PresenceConfig> &list,
                                    std::string_view channel);

std::string presence_key(std::string_view channel); // "sidecar:{C}:presence"

// The `#!lua name=sidecar_presence` library. It holds no configuration (ttl and the events
// channel travel with each call), so sidecars with different presence lists can share a Redis.
//   FCALL sidecar_presence 1 <channel> <sidecar> <ttl_ms> <events> <full|delta> [<user> <n>]...
//     applies one sidecar's batch: `full` replaces all of its fields, `delta` sets the listed
//     users (0 deletes); deletes fields of expired sidecars; renews <sidecar> (or deletes it
//     when it has no user left); PUBLISHes join/leave when a user's total over live sidecars
//     goes from 0 or to 0. Returns {1, joins, leaves}, or {0, 0, 0} without writing when a
//     delta finds the sidecar's own fields expired: the caller must send `full`.
//   FCALL_RO sidecar_presence_read 1 <channel>: {user, connections, ...} over live sidecars,
//     sorted by user.
const std::string &presence_library();

// One FCALL sidecar_presence.
struct PresenceBatch {
  std::string channel;
  std::string events;
  uint32_t ttl_ms = 0;
  bool full = false;
  std::vector<std::pair<std::string, uint32_t>> users; // connections here; 0: none left
};

// Local counts of tracked rooms and what Redis has not been told yet. Joins and leaves only
// mark a user dirty; take_batches (every tick) sends what changed since the last batch, so a
// user who leaves and comes back within a tick costs nothing, and a room costs one FCALL per
// tick at most whatever the number of its members.
class PresenceBook {
public:
  explicit PresenceBook(std::vector<PresenceConfig> list) : list_(std::move(list)) {}
  bool enabled() const { return !list_.empty(); }
  const std::vector<PresenceConfig> &config() const { return list_; }

  // One connection of `user` enters or leaves `channel`. Untracked channels and empty users
  // are ignored; `events` is the room's events channel, taken when the room is first seen.
  void join(const std::string &channel, const std::string &user, std::string_view events);
  void leave(const std::string &channel, const std::string &user);

  // Rooms with changes, rooms due a renewal (ttl/3 after their last batch) and rooms to send
  // in full. Marks what it returns as sent; rooms left empty are forgotten after their batch.
  std::vector<PresenceBatch> take_batches(uint64_t now_ms);
  // What Redis holds for this sidecar is unknown (a new connection, a failed or stale batch):
  // the next batch of the room (of every room) is `full`.
  void resend(const std::string &channel);
  void resend_all();

  size_t rooms() const { return rooms_.size(); }
  uint32_t connections(const std::string &channel, const std::string &user) const;

private:
  struct UserCount {
    uint32_t local = 0; // connections here now
    uint32_t sent = 0;  // what the last batch told Redis
    bool dirty = false; // listed in its room's dirty
  };
  struct RoomState {
    uint32_t ttl_ms = 0;
    std::string events;
    std::unordered_map<std::string, UserCount> users;
    std::vector<std::string> dirty;
    bool full = true;
    uint64_t renew_at_ms = 0;
  };
  std::vector<PresenceConfig> list_;
  std::unordered_map<std::string, RoomState> rooms_;
};

} // namespace sidecar
