// Rooms: channel -> the sessions that receive it. The first member of a room asks the Redis bus
// to SUBSCRIBE its channel and the last one to leave asks it to UNSUBSCRIBE. A Room only points at
// its sessions; the Server owns them, and a session leaves its rooms first thing when it closes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sidecar {

class Session;
class SharedFrame;

struct Room {
  std::string channel;
  std::vector<Session *> members;
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
  explicit Rooms(Subscriber &bus) : bus_(bus) {}

  // Adds s to the room of `channel` and returns the room and the slot it took; the session
  // keeps both so that leaving costs no search.
  Room *join(const std::string &channel, Session *s, uint32_t &slot);
  // Removes the member at `slot`. The member moved into the hole gets its new slot through
  // Session::moved_in_room.
  void leave(Room *room, uint32_t slot);
  // Queues f to every member of the room. Returns the recipients.
  size_t fan_out(Room &room, SharedFrame *f);

  Room *find(std::string_view channel);
  size_t size() const { return rooms_.size(); }
  template <typename F> void for_each(F &&f) const {
    for (const auto &[name, room] : rooms_)
      f(*room);
  }
  // Every channel that has members, for a resubscribe after Redis comes back.
  std::vector<std::string> channels() const;

private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  Subscriber &bus_;
  std::unordered_map<std::string, std::unique_ptr<Room>, Hash, std::equal_to<>> rooms_;
};

} // namespace sidecar
