#include "room.h"

#include <doctest/doctest.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "fake_history_reads.h"
#include "shared_frame.h"

using namespace sidecar;

namespace {

// Records SUBSCRIBE and UNSUBSCRIBE as "+org:a" and "-org:a", in order.
struct FakeBus final : Subscriber {
  std::vector<std::string> calls;
  std::set<std::string> confirmed; // channels Redis has confirmed, for subscribed()
  void subscribe(const std::string &channel) override { calls.push_back("+" + channel); }
  void unsubscribe(const std::string &channel) override { calls.push_back("-" + channel); }
  bool subscribed(const std::string &channel) const override {
    return confirmed.count(channel) != 0;
  }
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

// ---------------------------------------------------------------------------- history rooms

namespace {

struct HistoryWorld {
  FakeBus bus;
  PublishCounters counters;
  HistoryCounters history;
  FakeReads reads;
  Rooms rooms{bus, counters};
  HistoryWorld() {
    rooms.enable_history(reads, {HistoryConfig{"org:{org}", 100, 60, 10}}, history);
  }
  void join(FakeMember &m, const std::string &channel, bool v1) {
    m.v1 = v1;
    REQUIRE(m.rooms.join(rooms, channel, &m, v1));
  }
  // A room that has subscribed and answered its first read at (epoch, top).
  void ready(const std::string &channel, const std::string &epoch, uint64_t top) {
    rooms.on_subscribed(channel);
    REQUIRE(!reads.reads.empty());
    CHECK(reads.reads.back().channel == channel);
    CHECK(reads.reads.back().count == 0);
    reads.answer(reads.reads.size() - 1, epoch, top);
  }
};

std::string live(const std::string &epoch, uint64_t offset, const std::string &payload) {
  return std::string(kLiveHeaderPrefix) + epoch + " " + std::to_string(offset) + "\n" + payload;
}

std::string envelope(uint64_t offset, const std::string &data) {
  return R"({"type":"message","channel":"org:acme","epoch":"e1","offset":)" +
         std::to_string(offset) + R"(,"data":)" + data + "}";
}

} // namespace

TEST_CASE("a history room holds live messages until its first read, sent once subscribed") {
  HistoryWorld w;
  FakeMember v1, plain;
  w.join(v1, "org:acme", true);
  w.join(plain, "org:acme", false);
  CHECK(w.reads.reads.empty()); // not before Redis confirmed the SUBSCRIBE
  CHECK(w.rooms.publish("org:acme", live("e1", 1, "1")) == 0);
  CHECK(v1.got.empty());
  w.ready("org:acme", "e1", 0);
  CHECK(w.reads.reads[0].from == 0);
  CHECK(v1.payloads() == std::vector<std::string>{envelope(1, "1")});
  CHECK(plain.payloads() == std::vector<std::string>{"1"}); // the header is never relayed
  CHECK(v1.ready == 1);
  CHECK(plain.ready == 1);
}

TEST_CASE("a publication is framed once per kind of member, never per member") {
  HistoryWorld w;
  FakeMember a, b, c, d;
  w.join(a, "org:acme", true);
  w.join(b, "org:acme", true);
  w.join(c, "org:acme", false);
  w.join(d, "org:acme", false);
  w.ready("org:acme", "e1", 4);
  CHECK(w.rooms.publish("org:acme", live("e1", 5, "{\"k\":1}")) == 4);
  REQUIRE(a.got.size() == 1);
  CHECK(a.got[0] == b.got[0]);
  CHECK(c.got[0] == d.got[0]);
  CHECK(a.got[0] != c.got[0]);
  CHECK(a.got[0]->refs() == 2);
  CHECK(a.payloads()[0] == envelope(5, "{\"k\":1}"));
  CHECK(c.payloads()[0] == "{\"k\":1}");
  // A plain PUBLISH on a history channel: no position, and the order is not touched.
  CHECK(w.rooms.publish("org:acme", "plain") == 4);
  CHECK(a.payloads()[1] == R"({"type":"message","channel":"org:acme","data":"plain"})");
  CHECK(c.payloads()[1] == "plain");
  CHECK(w.rooms.publish("org:acme", live("e1", 6, "6")) == 4);
  CHECK(w.reads.reads.size() == 1); // no gap
}

TEST_CASE("a duplicate is dropped, and a gap is read once from the last delivered position") {
  HistoryWorld w;
  FakeMember m;
  w.join(m, "org:acme", false);
  w.ready("org:acme", "e1", 1);
  w.rooms.publish("org:acme", live("e1", 2, "2"));
  w.rooms.publish("org:acme", live("e1", 2, "2"));
  CHECK(w.history.live_duplicates == 1);
  w.rooms.publish("org:acme", live("e1", 5, "5")); // 3 and 4 went missing
  w.rooms.publish("org:acme", live("e1", 6, "6"));
  REQUIRE(w.reads.reads.size() == 2);
  CHECK(w.reads.reads[1].from == 2);
  CHECK(w.reads.reads[1].count == 10);
  CHECK(w.history.gap_reads == 1);
  CHECK(m.payloads() == std::vector<std::string>{"2"});
  w.reads.answer(1, "e1", 5, {{3, "3"}, {4, "4"}, {5, "5"}});
  CHECK(m.payloads() == std::vector<std::string>{"2", "3", "4", "5", "6"});
}

TEST_CASE("a gap the read cannot fill is a resync for both kinds, then what was held") {
  HistoryWorld w;
  FakeMember v1, plain;
  w.join(v1, "org:acme", true);
  w.join(plain, "org:acme", false);
  w.ready("org:acme", "e1", 1);
  w.rooms.publish("org:acme", live("e1", 9, "9"));
  REQUIRE(w.reads.reads.size() == 2);
  SUBCASE("trimmed") {
    w.reads.answer(1, "e1", 9, {{8, "8"}, {9, "9"}});
    std::string resync =
        R"({"type":"resync","channel":"org:acme","reason":"trimmed","epoch":"e1","offset":9})";
    CHECK(plain.payloads() == std::vector<std::string>{resync});
    CHECK(v1.payloads() == std::vector<std::string>{resync});
    CHECK(v1.got[0] == plain.got[0]);
    CHECK(w.history.resyncs_sent[static_cast<size_t>(ResyncReason::trimmed)] == 2);
    w.rooms.publish("org:acme", live("e1", 10, "10"));
    CHECK(plain.payloads().back() == "10");
  }
  SUBCASE("the read failed") {
    w.reads.fail(1);
    CHECK(plain.payloads() ==
          std::vector<std::string>{
              R"({"type":"resync","channel":"org:acme","reason":"unavailable"})", "9"});
  }
}

TEST_CASE("a broken header is dropped and counted; with history off it is relayed as sent") {
  HistoryWorld w;
  FakeMember m;
  w.join(m, "org:acme", false);
  w.ready("org:acme", "e1", 0);
  std::string broken = std::string(kLiveHeaderPrefix) + "E1 x\n{}";
  CHECK(w.rooms.publish("org:acme", broken) == 0);
  CHECK(w.history.live_malformed == 1);
  CHECK(m.got.empty());

  World off;
  FakeMember n;
  off.join(n, "org:acme");
  CHECK(off.rooms.publish("org:acme", broken) == 1);
  CHECK(n.payloads() == std::vector<std::string>{broken});
}

TEST_CASE("a subscriber reconnect reads each history room once; other rooms resync") {
  HistoryWorld w;
  FakeMember a, b, other;
  w.join(a, "org:acme", false);
  w.join(b, "org:acme", true);
  w.join(other, "sidecar:broadcast", false);
  w.ready("org:acme", "e1", 3);
  w.rooms.on_subscribed("sidecar:broadcast");
  CHECK(other.got.empty()); // no outage yet, nothing to tell
  w.rooms.on_subscriber_reconnected();
  w.rooms.publish("org:acme", live("e1", 6, "6")); // held: the room waits for its read
  CHECK(a.got.empty());
  CHECK(w.reads.reads.size() == 1); // not before the SUBSCRIBE is confirmed again
  w.rooms.on_subscribed("org:acme");
  w.rooms.on_subscribed("sidecar:broadcast");
  REQUIRE(w.reads.reads.size() == 2);
  CHECK(w.reads.reads[1].from == 3);
  w.reads.answer(1, "e1", 6, {{4, "4"}, {5, "5"}, {6, "6"}});
  CHECK(a.payloads() == std::vector<std::string>{"4", "5", "6"});
  CHECK(b.got.size() == 3);
  CHECK(other.payloads() ==
        std::vector<std::string>{R"({"type":"resync","channel":"sidecar:broadcast",)"
                                 R"("reason":"redis_reconnected"})"});
  CHECK(a.ready == 1); // ready is told once, after the first read only
}

TEST_CASE("a room that goes away cancels its read, and a room that comes back reads anew") {
  HistoryWorld w;
  FakeMember m;
  w.join(m, "org:acme", false);
  w.rooms.on_subscribed("org:acme");
  REQUIRE(w.reads.reads.size() == 1);
  m.rooms.leave_all(w.rooms);
  CHECK_FALSE(w.reads.reads[0].cb); // cancelled: its answer never reaches a freed room
  w.bus.confirmed.insert("org:acme");
  w.join(m, "org:acme", false); // already subscribed: the first read goes at once
  CHECK(w.reads.reads.size() == 2);
}

TEST_CASE("sidecar.v1 members of a room without history get envelopes without a position") {
  World w;
  FakeMember v1, plain;
  v1.v1 = true;
  REQUIRE(v1.rooms.join(w.rooms, "org:acme", &v1, true));
  w.join(plain, "org:acme");
  CHECK(w.rooms.publish("org:acme", "\xff") == 2);
  CHECK(v1.payloads() ==
        std::vector<std::string>{R"({"type":"message","channel":"org:acme","data_b64":"/w=="})"});
  CHECK(plain.payloads() == std::vector<std::string>{"\xff"});
  v1.rooms.leave_all(w.rooms, true);
  CHECK(w.rooms.find("org:acme")->v1_members == 0);
}
