// Rooms; see room.h.
#include "room.h"

#include "frame.h"
#include "log.h"
#include "shared_frame.h"

namespace sidecar {

Room *Rooms::join(const std::string &channel, RoomMember *m, uint32_t &slot, bool v1,
                  bool deflate) {
  auto it = rooms_.find(channel);
  bool created = it == rooms_.end();
  if (created) {
    auto room = std::make_unique<Room>();
    room->channel = channel;
    if (const HistoryConfig *h = reads_ != nullptr ? find_history(history_, channel) : nullptr)
      room->history = std::make_unique<RoomHistory>(*h);
    it = rooms_.emplace(channel, std::move(room)).first;
    bus_.subscribe(channel);
  }
  Room *room = it->second.get();
  slot = static_cast<uint32_t>(room->members.size());
  room->members.push_back(m);
  room->v1_members += v1 ? 1 : 0;
  room->deflate_members += deflate ? 1 : 0;
  // A new history room holds live messages until its first read, which waits for the SUBSCRIBE:
  // only then is everything after the read's answer sure to arrive.
  if (created && room->history && bus_.subscribed(channel)) {
    room->history->subscribed = true;
    start_read(*room);
  }
  return room;
}

void Rooms::leave(Room *room, uint32_t slot, bool v1, bool deflate) {
  room->v1_members -= v1 ? 1 : 0;
  room->deflate_members -= deflate ? 1 : 0;
  if (room->fanning_out) {
    // Filling the hole now would move a member that fan-out has not reached yet to a slot it
    // has passed, and that member would miss the message. The hole is filled when it ends.
    room->members[slot] = nullptr;
    ++room->holes;
    return;
  }
  remove_slot(room, slot);
  drop_if_empty(room);
}

void Rooms::remove_slot(Room *room, uint32_t slot) {
  auto &m = room->members;
  if (slot + 1 != m.size()) {
    m[slot] = m.back();
    if (m[slot] != nullptr)
      m[slot]->moved_in_room(room, slot);
  }
  m.pop_back();
}

void Rooms::drop_if_empty(Room *room) {
  if (!room->members.empty())
    return;
  std::string channel = room->channel;
  if (room->history)
    cancel_read(*room);  // its answer must never reach a freed room
  rooms_.erase(channel); // frees room
  bus_.unsubscribe(channel);
}

size_t Rooms::publish(std::string_view channel, std::string_view payload) {
  ++counters_.messages;
  Room *room = find(channel);
  if (room == nullptr) {
    ++counters_.unrouted;
    return 0;
  }
  // The one branch history and compression add to the common path: with history off, no
  // sidecar.v1 member and nothing to deflate, the payload is relayed as it came.
  if (room->history != nullptr || room->v1_members != 0 || reads_ != nullptr ||
      deflates(*room, payload.size())) [[unlikely]]
    return publish_each(*room, payload);
  // Framed once for the whole room: text when the payload is valid UTF-8, else binary.
  Opcode op = is_valid_utf8(payload) ? Opcode::text : Opcode::binary;
  FrameRef f(SharedFrame::make(op, payload));
  if (!f) {
    log_error("out_of_memory", {{"channel", channel}, {"bytes", payload.size()}});
    return 0;
  }
  size_t recipients = fan_out(*room, f.get());
  counters_.frames += recipients;
  return recipients;
}

template <typename Fn> size_t Rooms::each_member(Room &room, Fn &&fn) {
  // A member's deliver never leaves a room or frees anything: a session over its budget is only
  // marked here and closed later in the loop turn, so nothing leaves a room during fan-out. Should
  // one leave anyway, leave() only empties its slot until the loop ends, so every other member
  // still gets the frame exactly once. Members that join meanwhile come after `n` and wait for
  // the next message.
  room.fanning_out = true;
  size_t n = room.members.size(), recipients = 0;
  for (size_t i = 0; i < n; ++i) {
    if (RoomMember *m = room.members[i]) {
      fn(m);
      ++recipients;
    }
  }
  room.fanning_out = false;
  if (room.holes > 0) {
    room.holes = 0;
    for (uint32_t i = 0; i < room.members.size();) {
      if (room.members[i] != nullptr)
        ++i;
      else
        remove_slot(&room, i); // the member moved in may be a hole too: look at i again
    }
    drop_if_empty(&room);
  }
  return recipients;
}

size_t Rooms::fan_out(Room &room, SharedFrame *f) {
  return each_member(room, [f](RoomMember *m) { m->deliver(f); });
}

size_t Rooms::fan_out(Room &room, const Publication &p) {
  return each_member(room, [&room, &p](RoomMember *m) { m->deliver(&room, p); });
}

void Rooms::announce_ready(Room &room) {
  Room *r = &room;
  each_member(room, [r](RoomMember *m) { m->room_ready(r); });
}

Room *Rooms::find(std::string_view channel) {
  auto it = rooms_.find(channel);
  return it == rooms_.end() ? nullptr : it->second.get();
}

bool Memberships::join(Rooms &rooms, const std::string &channel, RoomMember *m, bool v1,
                       bool deflate) {
  for (const Entry &e : entries_) {
    if (e.room->channel == channel)
      return true;
  }
  Entry e{};
  e.room = rooms.join(channel, m, e.slot, v1, deflate);
  if (!entries_.push_back(e)) {
    rooms.leave(e.room, e.slot, v1, deflate);
    return false;
  }
  return true;
}

bool Memberships::leave(Rooms &rooms, Room *room, bool v1, bool deflate) noexcept {
  for (uint32_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].room != room)
      continue;
    Entry e = entries_[i];
    entries_[i] = entries_[entries_.size() - 1];
    entries_.pop_back();
    rooms.leave(e.room, e.slot, v1, deflate);
    return true;
  }
  return false;
}

void Memberships::moved(Room *room, uint32_t slot) noexcept {
  for (Entry &e : entries_) {
    if (e.room == room)
      e.slot = slot;
  }
}

void Memberships::leave_all(Rooms &rooms, bool v1, bool deflate) noexcept {
  while (!entries_.empty()) {
    Entry e = entries_.back();
    entries_.pop_back();
    rooms.leave(e.room, e.slot, v1, deflate);
  }
}

} // namespace sidecar
