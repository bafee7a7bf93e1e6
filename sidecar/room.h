// Rooms: channel -> the members that receive it. A Redis message for a channel is framed once and
// queued to every member of its room (publish). The first member of a room asks the Redis bus to
// SUBSCRIBE its channel and the last one to leave asks it to UNSUBSCRIBE. A Room only points at
// its members; the Server owns the sessions behind them, and a session leaves its rooms first
// thing when it closes.
//
// With history configured (issue 11) a room whose channel has a `history:` entry also keeps its
// order (ChannelSequence): positioned messages are delivered, dropped as duplicates or held while
// a read fills a gap, and what a read cannot prove complete becomes a resync. Members that asked
// for sidecar.v1 get each publication in an envelope; every publication is still framed at most
// twice (verbatim and envelope) per room, never per member.
//
// With compression (issue 14) a room counts its members that agreed permessage-deflate; when
// there is one and a publication is at least compression.min_bytes, the publication goes out
// as a Publication whose DeflatedFrames deflates it once, on the first such member's request,
// and every such member shares that RSV1 frame.
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

#include "channel_sequence.h"
#include "history.h"
#include "history_reads.h"
#include "metrics.h"
#include "permessage_deflate.h"
#include "small_vector.h"

namespace sidecar {

class SharedFrame;
struct Room;

// A publication's permessage-deflate frames: built when the first member that agreed compression
// asks, at most once per plain frame (verbatim, envelope) and window size, and shared by every
// member that asks the same. Lives on the stack of one fan-out.
class DeflatedFrames {
public:
  DeflatedFrames(DeflaterSet &deflaters, CompressionCounters &counters) noexcept
      : deflaters_(deflaters), counters_(counters) {}
  ~DeflatedFrames();
  DeflatedFrames(const DeflatedFrames &) = delete;
  DeflatedFrames &operator=(const DeflatedFrames &) = delete;
  // The compressed form of `plain` (a frame of this publication) for a member that compresses
  // with `window_bits`; null when that member gets `plain` instead (deflate did not make it
  // smaller, or failed), which a compressing client accepts as well.
  SharedFrame *get(SharedFrame *plain, uint8_t window_bits) noexcept;

private:
  struct Entry {
    const SharedFrame *plain = nullptr;
    uint8_t bits = 0;
    SharedFrame *frame = nullptr; // null: tried, the plain frame goes out
  };
  DeflaterSet &deflaters_;
  CompressionCounters &counters_;
  // Two frames times two window sizes; a fifth combination (clients that asked for three
  // different server windows in one room) gets the plain frame.
  std::array<Entry, 4> entries_{};
  uint8_t used_ = 0;
};

// One item a room hands its members other than through the plain fan-out: a publication in a
// room with history or with sidecar.v1 members, or a resync. Each member takes the frame of its
// kind; a frame is null when the room has no member of that kind (or, for a resync with history
// off, when verbatim members are not told).
struct Publication {
  SharedFrame *verbatim = nullptr; // the payload as published
  SharedFrame *envelope = nullptr; // the sidecar.v1 envelope, or the resync message
  // History rooms: the message's position, or where delivery continues after a resync (an empty
  // epoch when unknown). Null for a message without a position.
  const StreamPosition *pos = nullptr;
  bool resync = false; // a sidecar message, not a delivered publication
  // Compressed frames for members that agreed permessage-deflate; null when the room sends this
  // publication plain to everyone (no such member, too small, compression off).
  DeflatedFrames *deflated = nullptr;
};

// What a room needs from a member. Rooms call both; nothing else should.
class RoomMember {
public:
  // Queues f, taking a reference of its own if it keeps it. Called from inside fan-out: a member
  // must not be freed here, and should not leave a room either (one that cannot take f marks
  // itself and acts later in the loop turn). A leave from here is safe, but costs the room a
  // pass over its members when the fan-out ends.
  virtual void deliver(SharedFrame *f) noexcept = 0;
  // The same, for a room with history or sidecar.v1 members: the member picks its frame. The
  // same rules hold as for deliver(f).
  virtual void deliver(Room *room, const Publication &p) noexcept = 0;
  // Another member left `room` and this one was moved into its place: its slot is now `slot`.
  virtual void moved_in_room(Room *room, uint32_t slot) noexcept = 0;
  // A history room answered its first read: from here on it delivers every position after its
  // anchor, in order, or a resync. A member that reads the channel's history itself must ask
  // only from now on, or positions between its read and the room's anchor would be skipped.
  virtual void room_ready(Room *) noexcept {}

protected:
  ~RoomMember() = default;
};

// A history room's state: its order on the channel and the read it has in flight.
struct RoomHistory {
  explicit RoomHistory(const HistoryConfig &c) : cfg(c), seq(c.max_recover) {}
  HistoryConfig cfg;
  ChannelSequence seq;
  HistoryReadToken token = 0; // the read in flight, 0 when none
  uint64_t serial = 0;        // names the read in flight, so that a stale answer is ignored
  bool subscribed = false;    // Redis confirmed SUBSCRIBE on the current connection
  bool ready = false;         // the first read was answered (RoomMember::room_ready)
};

struct Room {
  std::string channel;
  // Each member once, at the slot it was told. During fan-out a member that leaves leaves a
  // null behind instead of being replaced (see Rooms::leave); nulls never outlive a fan-out.
  std::vector<RoomMember *> members;
  bool fanning_out = false;
  // A room without history whose subscriber link came back: its members are told to resync once
  // Redis confirms the SUBSCRIBE again.
  bool resync_on_subscribe = false;
  uint32_t holes = 0;                   // nulls left by members that left during fan-out
  uint32_t v1_members = 0;              // members that take sidecar.v1 envelopes
  uint32_t deflate_members = 0;         // members that agreed permessage-deflate
  std::unique_ptr<RoomHistory> history; // null unless the channel has a history: entry
};

// What a Rooms registry needs from the Redis side; RedisBus implements it.
class Subscriber {
public:
  virtual void subscribe(const std::string &channel) = 0;
  virtual void unsubscribe(const std::string &channel) = 0;
  // Redis confirmed SUBSCRIBE `channel` on the current connection.
  virtual bool subscribed(const std::string &) const { return false; }

protected:
  ~Subscriber() = default;
};

class Rooms {
public:
  // Counts every publication into `counters` (part of the server's Metrics), which must outlive
  // this registry.
  Rooms(Subscriber &bus, PublishCounters &counters) : bus_(bus), counters_(counters) {}

  // Turns history on (before any room exists): rooms whose channel matches an entry of `list`
  // keep their order and read through `reads`; live messages carry the sidecar_publish header,
  // which is parsed and never relayed. `counters` must outlive this registry.
  void enable_history(HistoryReads &reads, std::vector<HistoryConfig> list,
                      HistoryCounters &counters);
  bool history_enabled() const { return reads_ != nullptr; }

  // Turns compression on: publications of at least options.min_bytes to a room with members
  // that agreed permessage-deflate are deflated once for them (DeflatedFrames). `options` is
  // read on every publication (a reload replaces it in place: `enabled: false` stops
  // compressing at once, a new level applies from the next publication); it and `counters` must
  // outlive this registry.
  void enable_compression(const DeflateOptions &options, CompressionCounters &counters);

  // Adds m to the room of `channel` and returns the room and the slot it took; the member keeps
  // both so that leaving costs no search. A member joins a room at most once: it would
  // otherwise receive every message twice. `v1`: m takes sidecar.v1 envelopes; `deflate`: m
  // agreed permessage-deflate.
  Room *join(const std::string &channel, RoomMember *m, uint32_t &slot, bool v1 = false,
             bool deflate = false);
  // Removes the member at `slot`, of the kind it joined as. The member moved into the hole gets
  // its new slot through RoomMember::moved_in_room, at once or, during that room's fan-out, when
  // the fan-out ends.
  void leave(Room *room, uint32_t slot, bool v1 = false, bool deflate = false);

  // One message from Redis: frames `payload` once (a text frame when it is valid UTF-8, else
  // binary) and queues that one frame to every member of the channel's room. Returns the
  // recipients, 0 when the channel has no room here (counted as unrouted). In a room with
  // history or sidecar.v1 members, see publish_each.
  size_t publish(std::string_view channel, std::string_view payload);

  // RedisSink's subscriber events, passed on by the Server.
  void on_subscribed(std::string_view channel);
  void on_subscriber_reconnected();
  // One channel's subscription ended and is being made again (a sharded channel whose slot moved
  // or whose master failed): its room is treated as on_subscriber_reconnected treats every room.
  void on_subscription_lost(std::string_view channel);

  Room *find(std::string_view channel);
  size_t size() const { return rooms_.size(); }

private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  template <typename Fn> size_t each_member(Room &room, Fn &&fn);
  size_t fan_out(Room &room, SharedFrame *f);
  size_t fan_out(Room &room, const Publication &p);
  void announce_ready(Room &room); // RoomMember::room_ready to every member
  // The slow path of publish (room_history.cpp): the header parsed, the order kept, two kinds.
  size_t publish_each(Room &room, std::string_view payload);
  size_t deliver_payload(Room &room, std::string_view payload, const StreamPosition *pos);
  size_t send_resync(Room &room, ResyncReason reason, const StreamPosition *pos);
  // True when a publication of `bytes` to `room` is to be deflated for some of its members.
  bool deflates(const Room &room, size_t bytes) const noexcept;
  DeflaterSet *deflaters() noexcept; // for the configured level; null when out of memory
  void start_read(Room &room);
  void read_answered(const std::string &channel, uint64_t serial, const HistoryReadResult &r);
  void cancel_read(Room &room);
  void subscription_lost(Room &room);
  void remove_slot(Room *room, uint32_t slot);
  void drop_if_empty(Room *room);

  Subscriber &bus_;
  PublishCounters &counters_;
  HistoryReads *reads_ = nullptr; // non-null once history is enabled
  std::vector<HistoryConfig> history_;
  HistoryCounters *history_counters_ = nullptr;
  const DeflateOptions *compression_ = nullptr; // non-null once compression is enabled
  CompressionCounters *compression_counters_ = nullptr;
  std::unique_ptr<DeflaterSet> deflaters_; // made on first use, again when the level changes
  std::unordered_map<std::string, std::unique_ptr<Room>, Hash, std::equal_to<>> rooms_;
};

// The rooms one member is in and its slot in each, so that leaving costs no search. A Session
// keeps one; three memberships (room, user and broadcast channels) cost no heap.
class Memberships {
public:
  // Joins `channel` unless m is in its room already: templates that expand alike name a channel
  // twice, and a member in a room twice would get every message twice. False only when the
  // membership cannot be stored (out of memory); m is then not in the room.
  bool join(Rooms &rooms, const std::string &channel, RoomMember *m, bool v1 = false,
            bool deflate = false);
  // Leaves `room` (one this member joined through join); false when it is not one of them. The
  // last entry takes its place, so every other entry but the last keeps its index:
  // the first room joined stays first while it is joined (Session::room_channel).
  bool leave(Rooms &rooms, Room *room, bool v1 = false, bool deflate = false) noexcept;
  // RoomMember::moved_in_room lands here.
  void moved(Room *room, uint32_t slot) noexcept;
  // Leaves every room, the last joined first; `v1` and `deflate` as they were joined.
  void leave_all(Rooms &rooms, bool v1 = false, bool deflate = false) noexcept;

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
