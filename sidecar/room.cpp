// Rooms; see room.h.
#include "room.h"

#include "session.h"

namespace sidecar {

Room *Rooms::join(const std::string &channel, Session *s, uint32_t &slot) {
  auto it = rooms_.find(channel);
  if (it == rooms_.end()) {
    auto room = std::make_unique<Room>();
    room->channel = channel;
    it = rooms_.emplace(channel, std::move(room)).first;
    bus_.subscribe(channel);
  }
  Room *room = it->second.get();
  slot = static_cast<uint32_t>(room->members.size());
  room->members.push_back(s);
  return room;
}

void Rooms::leave(Room *room, uint32_t slot) {
  auto &m = room->members;
  if (slot + 1 != m.size()) {
    m[slot] = m.back();
    m[slot]->moved_in_room(room, slot);
  }
  m.pop_back();
  if (m.empty()) {
    std::string channel = room->channel;
    rooms_.erase(channel);
    bus_.unsubscribe(channel);
  }
}

size_t Rooms::fan_out(Room &room, SharedFrame *f) {
  // Session::send never leaves a room or frees anything: a session over its budget is only
  // marked here and closed later in the loop turn, so this vector cannot change under us.
  for (Session *s : room.members)
    s->send(f);
  return room.members.size();
}

Room *Rooms::find(std::string_view channel) {
  auto it = rooms_.find(channel);
  return it == rooms_.end() ? nullptr : it->second.get();
}

std::vector<std::string> Rooms::channels() const {
  std::vector<std::string> out;
  out.reserve(rooms_.size());
  for (const auto &[name, room] : rooms_)
    out.push_back(name);
  return out;
}

} // namespace sidecar
