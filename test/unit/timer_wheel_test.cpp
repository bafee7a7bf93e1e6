#include "timer_wheel.h"

#include <doctest/doctest.h>

#include <memory>
#include <vector>

using namespace sidecar;

namespace {

struct Item : TimerWheel::Entry {
  int id = 0;
  int fired = 0;
  uint64_t fired_at = 0;
};

// Advances w to `now` and returns the ids fired, in order; each records when it fired.
std::vector<int> advance(TimerWheel &w, uint64_t now) {
  std::vector<int> ids;
  w.advance(now, [&](TimerWheel::Entry &e) {
    auto &it = static_cast<Item &>(e);
    ++it.fired;
    it.fired_at = now;
    ids.push_back(it.id);
  });
  return ids;
}

} // namespace

TEST_CASE("an entry fires at the first advance at or after its deadline, not before") {
  TimerWheel w(0, 10, 8);
  Item a;
  a.id = 1;
  w.schedule(a, 25);
  CHECK(a.scheduled());
  CHECK(advance(w, 10).empty());
  CHECK(advance(w, 20).empty());
  CHECK(advance(w, 24).empty()); // same tick as 20: nothing new is visited
  CHECK(advance(w, 30) == std::vector<int>{1});
  CHECK(!a.scheduled());
  CHECK(advance(w, 100).empty()); // once only
  CHECK(a.fired == 1);
}

TEST_CASE("a deadline on a tick boundary fires as soon as the clock reaches it") {
  TimerWheel w(0, 10, 8);
  Item a;
  w.schedule(a, 20);
  CHECK(advance(w, 19).empty());
  CHECK(advance(w, 20).size() == 1);
}

TEST_CASE("an entry further away than one turn of the wheel waits for its own deadline") {
  TimerWheel w(0, 10, 4); // one turn is 40 ms
  Item far;
  w.schedule(far, 135);
  for (uint64_t t = 10; t < 140; t += 10)
    CHECK(advance(w, t).empty());
  CHECK(advance(w, 140).size() == 1);
  CHECK(far.fired_at == 140);
}

TEST_CASE("a long gap between advances fires everything that came due, once") {
  TimerWheel w(0, 10, 8);
  std::vector<std::unique_ptr<Item>> items;
  for (int i = 0; i < 50; ++i) {
    items.push_back(std::make_unique<Item>());
    items.back()->id = i;
    w.schedule(*items.back(), static_cast<uint64_t>(5 + i * 7));
  }
  CHECK(advance(w, 1000).size() == 50);
  for (auto &it : items)
    CHECK(it->fired == 1);
}

TEST_CASE("rescheduling replaces the deadline, earlier or later") {
  TimerWheel w(0, 10, 8);
  Item a;
  w.schedule(a, 50);
  w.schedule(a, 15); // earlier
  CHECK(advance(w, 20).size() == 1);
  w.schedule(a, 30);
  w.schedule(a, 70); // later
  CHECK(advance(w, 60).empty());
  CHECK(advance(w, 70).size() == 1);
  CHECK(a.fired == 2);
}

TEST_CASE("a cancelled or destroyed entry never fires") {
  TimerWheel w(0, 10, 8);
  Item a;
  w.schedule(a, 20);
  a.cancel();
  CHECK(!a.scheduled());
  {
    Item b;
    w.schedule(b, 20);
  }
  CHECK(advance(w, 100).empty());
}

TEST_CASE(
    "an entry that fires may schedule itself again; a past deadline waits for the next tick") {
  TimerWheel w(0, 10, 8);
  Item a;
  int fired = 0;
  w.schedule(a, 10);
  auto rearm = [&](TimerWheel::Entry &e) {
    ++fired;
    w.schedule(e, 0); // long past: must not fire again within this advance
  };
  w.advance(10, rearm);
  CHECK(fired == 1);
  w.advance(15, rearm); // the same tick
  CHECK(fired == 1);
  w.advance(20, rearm);
  CHECK(fired == 2);
}

TEST_CASE("firing one entry may cancel or destroy another of the same slot") {
  TimerWheel w(0, 10, 8);
  auto a = std::make_unique<Item>();
  auto b = std::make_unique<Item>();
  auto c = std::make_unique<Item>();
  a->id = 1;
  b->id = 2;
  c->id = 3;
  w.schedule(*a, 10);
  w.schedule(*b, 10);
  w.schedule(*c, 10);
  std::vector<int> ids;
  w.advance(10, [&](TimerWheel::Entry &e) {
    auto &it = static_cast<Item &>(e);
    ids.push_back(it.id);
    if (it.id == 1) {
      b.reset();   // destroyed while waiting to be visited
      c->cancel(); // cancelled likewise
    }
  });
  CHECK(ids == std::vector<int>{1});
  CHECK(advance(w, 100).empty());
}

TEST_CASE(
    "entries in one slot that are not yet due stay, and fire in deadline order across ticks") {
  TimerWheel w(0, 10, 2); // slots shared by ticks 2 apart
  Item a, b, c;
  a.id = 1;
  b.id = 2;
  c.id = 3;
  w.schedule(a, 20);
  w.schedule(b, 40); // same slot as a, one turn later
  w.schedule(c, 30);
  CHECK(advance(w, 20) == std::vector<int>{1});
  CHECK(b.scheduled());
  CHECK(advance(w, 30) == std::vector<int>{3});
  CHECK(advance(w, 40) == std::vector<int>{2});
}

TEST_CASE("a wheel destroyed first leaves its entries unscheduled, not dangling") {
  Item a;
  {
    TimerWheel w(0, 10, 8);
    w.schedule(a, 30);
  }
  CHECK(!a.scheduled());
}

TEST_CASE("the wheel starts at the clock it is given") {
  TimerWheel w(1'000'000, 100, 16);
  Item a;
  w.schedule(a, 1'000'050);
  CHECK(advance(w, 1'000'099).empty());
  CHECK(advance(w, 1'000'100).size() == 1);
}
