#include "room.h"

#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "shared_frame.h"

using namespace sidecar;

namespace {

// Records SUBSCRIBE and UNSUBSCRIBE as "+org:a" and "-org:a", in order.
struct FakeBus final : Subscriber {
  std::vector<std::string> calls;
  void subscribe(const std::string &channel) override { calls.push_back("+" + channel); }
  void unsubscribe(const std::string &channel) override { calls.push_back("-" + channel); }
};

// A member as a session is one: it keeps its memberships and a reference to every frame it is
// given. `on_deliver` lets a test misbehave from inside fan-out.
struct FakeMember final : RoomMember {
  Memberships rooms;
  std::vector<SharedFrame *> got;
  std::function<void(FakeMember &)> on_deliver;

  FakeMember() = default;
  FakeMember(const FakeMember &) = delete;
  FakeMember &operator=(const FakeMember &) = delete;
  ~FakeMember() {
    for (SharedFrame *f : got)
      f->unref();
  }

  void deliver(SharedFrame *f) noexcept override {
    f->ref();
    got.push_back(f);
    if (on_deliver)
      on_deliver(*this);
  }
  // As a session does: the frame of its kind, if the room built one.
  void deliver(Room *, const Publication &p) noexcept override {
    ++publications;
    if (SharedFrame *f = v1 ? p.envelope : p.verbatim)
      deliver(f);
  }
  void moved_in_room(Room *room, uint32_t slot) noexcept override { rooms.moved(room, slot); }
  void room_ready(Room *) noexcept override { ++ready; }

  bool v1 = false; // takes sidecar.v1 envelopes
  int publications = 0;
  int ready = 0;

  // The payloads received, in order (frames here are short: a 2-byte header).
  std::vector<std::string> payloads() const {
    std::vector<std::string> out;
    for (const SharedFrame *f : got)
      out.emplace_back(reinterpret_cast<const char *>(f->data()) + 2, f->size() - 2);
    return out;
  }
};

struct World {
  FakeBus bus;
  PublishCounters counters;
  Rooms rooms{bus, counters};

  void join(FakeMember &m, const std::string &channel) {
    REQUIRE(m.rooms.join(rooms, channel, &m));
  }
  void leave(FakeMember &m) { m.rooms.leave_all(rooms); }
};

// Every member's recorded slot is where the room really holds it, and the room holds only them.
void check_slots(Room *room, std::initializer_list<FakeMember *> expected) {
  REQUIRE(room != nullptr);
  CHECK(room->members.size() == expected.size());
  for (FakeMember *m : expected) {
    bool found = false;
    for (uint32_t i = 0; i < m->rooms.size(); ++i) {
      if (m->rooms.room(i) != room)
        continue;
      found = true;
      REQUIRE(m->rooms.slot(i) < room->members.size());
      CHECK(room->members[m->rooms.slot(i)] == m);
    }
    CHECK(found);
  }
}

} // namespace

TEST_CASE("the first member of a room subscribes its channel and the last to leave unsubscribes") {
  World w;
  FakeMember a, b;
  w.join(a, "org:acme");
  CHECK(w.bus.calls == std::vector<std::string>{"+org:acme"});
  w.join(b, "org:acme");
  CHECK(w.bus.calls.size() == 1); // the second member rides on the first one's SUBSCRIBE
  CHECK(w.rooms.size() == 1);
  w.leave(a);
  CHECK(w.bus.calls.size() == 1);
  w.leave(b);
  CHECK(w.bus.calls == std::vector<std::string>{"+org:acme", "-org:acme"});
  CHECK(w.rooms.size() == 0);
  CHECK(w.rooms.find("org:acme") == nullptr);
  w.join(a, "org:acme"); // a room that came back subscribes again
  CHECK(w.bus.calls.back() == "+org:acme");
}

TEST_CASE("a member in several rooms leaves every one of them") {
  World w;
  FakeMember a;
  for (const char *ch : {"org:a", "org:a:user:u", "sidecar:broadcast", "extra:1", "extra:2"})
    w.join(a, ch);
  CHECK(a.rooms.size() == 5); // beyond the three that fit inline
  CHECK(w.rooms.size() == 5);
  w.leave(a);
  CHECK(a.rooms.size() == 0);
  CHECK(w.rooms.size() == 0);
  CHECK(w.bus.calls.size() == 10);
  CHECK(w.bus.calls.back() == "-org:a"); // the last joined leaves first
}

TEST_CASE("a channel named twice is joined once and each message arrives once") {
  World w;
  FakeMember a;
  w.join(a, "org:acme");
  w.join(a, "org:acme"); // a user template that expands to the room channel
  CHECK(a.rooms.size() == 1);
  CHECK(w.rooms.find("org:acme")->members.size() == 1);
  CHECK(w.rooms.publish("org:acme", "hello") == 1);
  CHECK(a.payloads() == std::vector<std::string>{"hello"});
}

TEST_CASE("the member moved into a leaver's slot is told its new slot") {
  World w;
  FakeMember a, b, c, d;
  for (FakeMember *m : {&a, &b, &c, &d})
    w.join(*m, "org:acme");
  Room *room = w.rooms.find("org:acme");
  w.leave(a); // d fills slot 0
  check_slots(room, {&b, &c, &d});
  CHECK(room->members[0] == &d);
  w.leave(d); // the last slot: nobody moves
  check_slots(room, {&b, &c});
  CHECK(w.rooms.publish("org:acme", "x") == 2);
  CHECK(a.got.empty());
  CHECK(d.got.empty());
  CHECK(b.payloads() == std::vector<std::string>{"x"});
}

TEST_CASE("one publication is one frame, and every member holds that same frame") {
  World w;
  FakeMember a, b, c;
  for (FakeMember *m : {&a, &b, &c})
    w.join(*m, "org:acme");
  CHECK(w.rooms.publish("org:acme", "{\"type\":\"SYNC\"}") == 3);
  REQUIRE(a.got.size() == 1);
  SharedFrame *f = a.got[0];
  CHECK(b.got[0] == f);
  CHECK(c.got[0] == f);
  CHECK(f->refs() == 3);       // the publisher's reference is gone; one per member remains
  CHECK(f->data()[0] == 0x81); // FIN + text
  CHECK(w.counters.messages == 1);
  CHECK(w.counters.frames == 3);
  CHECK(w.counters.unrouted == 0);
}

TEST_CASE("members receive messages in publication order") {
  World w;
  FakeMember a, b, c;
  w.join(a, "org:acme");
  w.join(b, "org:acme");
  w.join(c, "org:other");
  w.join(b, "org:other");
  std::vector<std::string> acme, all;
  for (int i = 0; i < 50; ++i) {
    std::string p = std::to_string(i);
    const char *ch = i % 3 == 0 ? "org:other" : "org:acme";
    w.rooms.publish(ch, p);
    all.push_back(p);
    if (i % 3 != 0)
      acme.push_back(p);
  }
  CHECK(a.payloads() == acme);
  CHECK(b.payloads() == all); // two rooms, one queue: the order of publication
  CHECK(c.payloads().size() == 17);
  CHECK(w.counters.frames == 33 * 2 + 17 * 2);
}

TEST_CASE("a payload that is not UTF-8 goes out as a binary frame, byte for byte") {
  World w;
  FakeMember a;
  w.join(a, "org:acme");
  const std::string bytes("\xff\x00\xc0\x80", 4);
  w.rooms.publish("org:acme", bytes);
  w.rooms.publish("org:acme", "caf\xc3\xa9");
  REQUIRE(a.got.size() == 2);
  CHECK(a.got[0]->data()[0] == 0x82); // FIN + binary
  CHECK(a.got[1]->data()[0] == 0x81); // FIN + text
  CHECK(a.payloads() == std::vector<std::string>{bytes, "caf\xc3\xa9"});
}

TEST_CASE("a publication for a channel with no room here is counted as unrouted") {
  World w;
  FakeMember a;
  w.join(a, "org:acme");
  w.leave(a);
  CHECK(w.rooms.publish("org:acme", "late") == 0);
  CHECK(w.rooms.publish("org:nobody", "x") == 0);
  CHECK(w.counters.messages == 2);
  CHECK(w.counters.unrouted == 2);
  CHECK(w.counters.frames == 0);
  CHECK(a.got.empty());
}

TEST_CASE("a member that leaves during fan-out costs nobody else the message") {
  // Sessions never do this (an over-budget one only marks itself), but should one, the slot it
  // leaves must not be filled by a member the loop has not reached yet.
  World w;
  FakeMember m[5];
  for (FakeMember &x : m)
    w.join(x, "org:acme");
  Room *room = w.rooms.find("org:acme");

  SUBCASE("the member itself") {
    m[1].on_deliver = [&](FakeMember &self) { w.leave(self); };
    CHECK(w.rooms.publish("org:acme", "one") == 5);
    check_slots(room, {&m[0], &m[2], &m[3], &m[4]});
  }
  SUBCASE("a member the loop has not reached, which would otherwise be moved back") {
    m[1].on_deliver = [&](FakeMember &) { w.leave(m[3]); };
    CHECK(w.rooms.publish("org:acme", "one") == 4);
    CHECK(m[3].got.empty());
    check_slots(room, {&m[0], &m[1], &m[2], &m[4]});
  }
  SUBCASE("the last member, whose slot would fill the hole") {
    m[0].on_deliver = [&](FakeMember &self) {
      w.leave(self);
      w.leave(m[4]);
    };
    CHECK(w.rooms.publish("org:acme", "one") == 4);
    CHECK(m[4].got.empty());
    check_slots(room, {&m[1], &m[2], &m[3]});
  }
  for (FakeMember &x : m) {
    if (x.rooms.size() > 0)
      CHECK(x.payloads() == std::vector<std::string>{"one"});
  }
  // After the fan-out the room is whole again: the next message reaches exactly who is left.
  for (FakeMember &x : m)
    x.on_deliver = nullptr;
  w.rooms.publish("org:acme", "two");
  for (FakeMember &x : m) {
    CHECK(x.got.size() <= 2);
    if (x.rooms.size() > 0)
      CHECK(x.payloads().back() == "two");
    else
      CHECK((x.got.empty() || x.payloads().back() == "one"));
  }
  CHECK(w.bus.calls == std::vector<std::string>{"+org:acme"});
}

TEST_CASE("when every member leaves during fan-out the room goes once the loop ends") {
  World w;
  FakeMember m[3];
  for (FakeMember &x : m) {
    w.join(x, "org:acme");
    x.on_deliver = [&](FakeMember &self) { w.leave(self); };
  }
  CHECK(w.rooms.publish("org:acme", "bye") == 3);
  for (FakeMember &x : m)
    CHECK(x.payloads() == std::vector<std::string>{"bye"});
  CHECK(w.rooms.size() == 0);
  CHECK(w.bus.calls == std::vector<std::string>{"+org:acme", "-org:acme"});
  CHECK(w.rooms.publish("org:acme", "late") == 0);
  CHECK(w.counters.unrouted == 1);
}

TEST_CASE("a member that joins during fan-out gets the next message, not this one") {
  World w;
  FakeMember a, b, late;
  w.join(a, "org:acme");
  w.join(b, "org:acme");
  a.on_deliver = [&](FakeMember &) {
    if (late.rooms.size() == 0)
      w.join(late, "org:acme");
  };
  CHECK(w.rooms.publish("org:acme", "one") == 2);
  CHECK(late.got.empty());
  CHECK(w.rooms.publish("org:acme", "two") == 3);
  CHECK(late.payloads() == std::vector<std::string>{"two"});
  check_slots(w.rooms.find("org:acme"), {&a, &b, &late});
}

TEST_CASE("a member that leaves and joins again during fan-out keeps one correct slot") {
  World w;
  FakeMember m[4];
  for (FakeMember &x : m)
    w.join(x, "org:acme");
  m[0].on_deliver = [&](FakeMember &self) {
    self.on_deliver = nullptr;
    w.leave(self);
    w.join(self, "org:acme");
  };
  CHECK(w.rooms.publish("org:acme", "one") == 4);
  Room *room = w.rooms.find("org:acme");
  check_slots(room, {&m[0], &m[1], &m[2], &m[3]});
  CHECK(w.rooms.publish("org:acme", "two") == 4);
  for (FakeMember &x : m)
    CHECK(x.payloads() == std::vector<std::string>{"one", "two"});
  CHECK(w.bus.calls == std::vector<std::string>{"+org:acme"});
}
