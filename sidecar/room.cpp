// Rooms; see room.h.
#include "room.h"

#include "frame.h"
#include "log.h"
#include "shared_frame.h"

namespace sidecar {

Room *Rooms::join(const std::string &channel, RoomMember *m, uint32_t &slot) {
  auto it = rooms_.find(channel);
  if (it == rooms_.end()) {
    auto room = std::make_unique<Room>();
    room->channel = channel;
    it = rooms_.emplace(channel, std::move(room)).first;
    bus_.subscribe(channel);
  }
  Room *room = it->second.get();
  slot = static_cast<uint32_t>(room->members.size());
  room->members.push_back(m);
  return room;
}

void Rooms::leave(Room *room, uint32_t slot) {
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

size_t Rooms::fan_out(Room &room, SharedFrame *f) {
  // A member's deliver never leaves a room or frees anything: a session over its budget is only
  // marked here and closed later in the loop turn, so nothing leaves a room during fan-out. Should
  // one leave anyway, leave() only empties its slot until the loop ends, so every other member
  // still gets the frame exactly once. Members that join meanwhile come after `n` and wait for
  // the next message.
  room.fanning_out = true;
  size_t n = room.members.size(), recipients = 0;
  for (size_t i = 0; i < n; ++i) {
    if (RoomMember *m = room.members[i]) {
      m->deliver(f);
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

Room *Rooms::find(std::string_view channel) {
  auto it = rooms_.find(channel);
  return it == rooms_.end() ? nullptr : it->second.get();
}

bool Memberships::join(Rooms &rooms, const std::string &channel, RoomMember *m) {
  for (const Entry &e : entries_) {
    if (e.room->channel == channel)
      return true;
  }
  Entry e{};
  e.room = rooms.join(channel, m, e.slot);
  if (!entries_.push_back(e)) {
    rooms.leave(e.room, e.slot);
    return false;
  }
  return true;
}

void Memberships::moved(Room *room, uint32_t slot) noexcept {
  for (Entry &e : entries_) {
    if (e.room == room)
      e.slot = slot;
  }
}

void Memberships::leave_all(Rooms &rooms) noexcept {
  while (!entries_.empty()) {
    Entry e = entries_.back();
    entries_.pop_back();
    rooms.leave(e.room, e.slot);
  }
}

} // namespace sidecar
