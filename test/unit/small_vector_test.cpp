#include "small_vector.h"

#include <doctest/doctest.h>

#include "room.h"

using namespace sidecar;

namespace {

struct Pair {
  void *p;
  uint32_t n;
};

} // namespace

TEST_CASE("up to the inline capacity, elements stay inside the vector") {
  SmallVector<Pair, 3> v;
  CHECK(v.empty());
  CHECK(v.capacity() == 3);
  for (uint32_t i = 0; i < 3; ++i)
    REQUIRE(v.push_back(Pair{&v, i}));
  CHECK(!v.on_heap());
  CHECK(v.size() == 3);
  auto *self = reinterpret_cast<const char *>(&v);
  auto *first = reinterpret_cast<const char *>(v.data());
  CHECK(first >= self);
  CHECK(first < self + sizeof v);
  CHECK(v[2].n == 2);
  CHECK(v.back().n == 2);
}

TEST_CASE("past the inline capacity, elements move to the heap in order and stay there") {
  SmallVector<Pair, 3> v;
  for (uint32_t i = 0; i < 100; ++i)
    REQUIRE(v.push_back(Pair{nullptr, i}));
  CHECK(v.on_heap());
  CHECK(v.size() == 100);
  CHECK(v.capacity() >= 100);
  uint32_t expect = 0;
  for (const Pair &p : v)
    CHECK(p.n == expect++);
  while (v.size() > 1)
    v.pop_back();
  CHECK(v.on_heap()); // shrinking never moves back: no churn at the boundary
  CHECK(v[0].n == 0);
  v.pop_back();
  CHECK(v.empty());
}

TEST_CASE("pushing an element of the vector itself survives the move to the heap") {
  SmallVector<Pair, 2> v;
  REQUIRE(v.push_back(Pair{nullptr, 7}));
  REQUIRE(v.push_back(Pair{nullptr, 8}));
  REQUIRE(v.push_back(v[0])); // grows: v[0]'s old home is freed
  CHECK(v.size() == 3);
  CHECK(v[2].n == 7);
}

TEST_CASE("reserve makes room at once and keeps what is there") {
  SmallVector<Pair, 3> v;
  REQUIRE(v.reserve(2)); // within the inline room: nothing to do
  CHECK(!v.on_heap());
  REQUIRE(v.push_back(Pair{nullptr, 1}));
  REQUIRE(v.reserve(10));
  CHECK(v.on_heap());
  CHECK(v.capacity() == 10);
  CHECK(v[0].n == 1);
}

TEST_CASE("an idle session's memberships cost no more than the three fixed slots they replaced") {
  // Three {Room *, slot} pairs were 48 bytes plus a count. Every idle connection pays for each
  // byte here (the bound on the whole Session is in session_test.cpp).
  MESSAGE("sizeof(Memberships) = " << sizeof(Memberships));
  CHECK(sizeof(Memberships) <= 56);
}
