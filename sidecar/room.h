// Rooms: channel -> the members that receive it. A Redis message for a channel is framed once and
// queued to every member of its room (publish). The first member of a room asks the Redis bus to
// SUBSCRIBE its channel and the last one to leave asks it to UNSUBSCRIBE. A Room only points at
// its members; the Server owns the sessions behind them, and a session leaves its rooms first
// thing when it closes.
//
// Rooms know their members only as RoomMember (Session implements it), so this file and its tests
// need no sockets, no loop and no Server.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "metrics.h"
#include "small_vector.h"

namespace sidecar {

class SharedFrame;
struct Room;

// What a room needs from a member. Rooms call both; nothing else should.
class RoomMember {
public:
  // Queues f, taking a reference of its own if it keeps it. Called from inside fan-out: a member
  // must not be freed here, and should not leave a room either (one that cannot take f marks
  // itself and acts later in the loop turn). A leave from here is safe, but costs the room a
  // pass over its members when the fan-out ends.
  virtual void deliver(SharedFrame *f) noexcept = 0;
  // Another member left `room` and this one was moved into its place: its slot is now `slot`.
  virtual void moved_in_room(Room *room, uint32_t slot) noexcept = 0;

protected:
  ~RoomMember() = default;
};

struct Room {
  std::string channel;
  // Each member once, at the slot it was told. During fan-out a member that leaves leaves a
  // null behind instead of being replaced (see Rooms::leave); nulls never outlive a fan-out.
  std::vector<RoomMember *> members;
  bool fanning_out = false;
  uint32_t holes = 0; // nulls left by members that left during fan-out
};

// What a Rooms registry needs from the Redis side; RedisBus implements it.
class Subscriber {
public:
  virtual void subscribe(const std::string &channel) = 0;
  virtual void unsubscribe(const std::string &channel) = 0;

protected:
  ~Subscriber() = default;
};

class Rooms {
public:
  // Counts every publication into `counters` (part of the server's Metrics), which must outlive
  // this registry.
  Rooms(Subscriber &bus, PublishCounters &counters) : bus_(bus), counters_(counters) {}

  // Adds m to the room of `channel` and returns the room and the slot it took; the member keeps
  // both so that leaving costs no search. A member joins a room at most once: it would
  // otherwise receive every message twice.
  Room *join(const std::string &channel, RoomMember *m, uint32_t &slot);
  // Removes the member at `slot`. The member moved into the hole gets its new slot through
  // RoomMember::moved_in_room, at once or, during that room's fan-out, when the fan-out ends.
  void leave(Room *room, uint32_t slot);

  // One message from Redis: frames `payload` once (a text frame when it is valid UTF-8, else
  // binary) and queues that one frame to every member of the channel's room. Returns the
  // recipients, 0 when the channel has no room here (counted as unrouted).
  size_t publish(std::string_view channel, std::string_view payload);

  Room *find(std::string_view channel);
  size_t size() const { return rooms_.size(); }

private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  size_t fan_out(Room &room, SharedFrame *f);
  void remove_slot(Room *room, uint32_t slot);
  void drop_if_empty(Room *room);

  Subscriber &bus_;
  PublishCounters &counters_;
  std::unordered_map<std::string, std::unique_ptr<Room>, Hash, std::equal_to<>> rooms_;
};

// The rooms one member is in and its slot in each, so that leaving costs no search. A Session
// keeps one; three memberships (room, user and broadcast channels) cost no heap.
class Memberships {
public:
  // Joins `channel` unless m is in its room already: templates that expand alike name a channel
  // twice, and a member in a room twice would get every message twice. False only when the
  // membership cannot be stored (out of memory); m is then not in the room.
  bool join(Rooms &rooms, const std::string &channel, RoomMember *m);
  // RoomMember::moved_in_room lands here.
  void moved(Room *room, uint32_t slot) noexcept;
  // Leaves every room, the last joined first.
  void leave_all(Rooms &rooms) noexcept;

  uint32_t size() const noexcept { return entries_.size(); }
  Room *room(uint32_t i) const noexcept { return entries_[i].room; }
  uint32_t slot(uint32_t i) const noexcept { return entries_[i].slot; }

private:
  struct Entry {
    Room *room;
    uint32_t slot;
  };
  SmallVector<Entry, 3> entries_;
};

} // namespace sidecar
