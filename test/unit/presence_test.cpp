#include "presence.h"

#include <doctest/doctest.h>

#include <algorithm>

using namespace sidecar;

namespace {

PresenceBook book() { return PresenceBook({{"org:{org}", 30, "org:{org}:presence"}}); }

std::vector<std::pair<std::string, uint32_t>>
sorted(std::vector<std::pair<std::string, uint32_t>> v) {
  std::sort(v.begin(), v.end());
  return v;
}

} // namespace

TEST_CASE("a new room goes out in full with each user's connections, then not again") {
  PresenceBook b = book();
  b.join("org:acme", "alice", "org:acme:presence");
  b.join("org:acme", "alice", "org:acme:presence");
  b.join("org:acme", "bob", "org:acme:presence");
  std::vector<PresenceBatch> out = b.take_batches(1000);
  REQUIRE(out.size() == 1);
  CHECK(out[0].channel == "org:acme");
  CHECK(out[0].events == "org:acme:presence");
  CHECK(out[0].ttl_ms == 30000);
  CHECK(out[0].full);
  CHECK(sorted(out[0].users) ==
        std::vector<std::pair<std::string, uint32_t>>{{"alice", 2}, {"bob", 1}});
  CHECK(b.take_batches(1001).empty());
}

TEST_CASE("untracked channels and anonymous connections are not counted") {
  PresenceBook b = book();
  b.join("feed:acme", "alice", "");
  b.join("org:acme", "", "");
  CHECK(b.rooms() == 0);
  CHECK(b.take_batches(0).empty());
}

TEST_CASE("a change is a delta of the users that changed, with their new counts") {
  PresenceBook b = book();
  b.join("org:acme", "alice", "e");
  b.join("org:acme", "bob", "e");
  b.take_batches(0);
  b.join("org:acme", "alice", "e");
  b.leave("org:acme", "bob");
  std::vector<PresenceBatch> out = b.take_batches(100);
  REQUIRE(out.size() == 1);
  CHECK_FALSE(out[0].full);
  CHECK(sorted(out[0].users) ==
        std::vector<std::pair<std::string, uint32_t>>{{"alice", 2}, {"bob", 0}});
  CHECK(b.connections("org:acme", "bob") == 0);
}

TEST_CASE("a tab that closes and reopens within one tick costs nothing") {
  PresenceBook b = book();
  b.join("org:acme", "alice", "e");
  b.take_batches(0);
  for (int i = 0; i < 1000; ++i) {
    b.leave("org:acme", "alice");
    b.join("org:acme", "alice", "e");
  }
  CHECK(b.take_batches(100).empty());
}

TEST_CASE("many users changing in one tick are one batch for their room") {
  PresenceBook b = book();
  for (int i = 0; i < 10000; ++i)
    b.join("org:acme", "u" + std::to_string(i), "e");
  std::vector<PresenceBatch> out = b.take_batches(0);
  REQUIRE(out.size() == 1);
  CHECK(out[0].users.size() == 10000);
}

TEST_CASE("a room is renewed every ttl/3 with an empty delta") {
  PresenceBook b = book();
  b.join("org:acme", "alice", "e");
  b.take_batches(0);
  CHECK(b.take_batches(9999).empty());
  std::vector<PresenceBatch> out = b.take_batches(10000);
  REQUIRE(out.size() == 1);
  CHECK_FALSE(out[0].full);
  CHECK(out[0].users.empty());
}

TEST_CASE("the last leave sends the zero and forgets the room") {
  PresenceBook b = book();
  b.join("org:acme", "alice", "e");
  b.take_batches(0);
  b.leave("org:acme", "alice");
  b.leave("org:acme", "alice"); // one more leave than joins changes nothing
  std::vector<PresenceBatch> out = b.take_batches(100);
  REQUIRE(out.size() == 1);
  CHECK(out[0].users == std::vector<std::pair<std::string, uint32_t>>{{"alice", 0}});
  CHECK(b.rooms() == 0);
  CHECK(b.take_batches(100000).empty());
}

TEST_CASE("after a resend every room goes out in full, empty rooms included") {
  PresenceBook b = book();
  b.join("org:acme", "alice", "e");
  b.join("org:beta", "bob", "e");
  b.take_batches(0);
  b.resend_all();
  std::vector<PresenceBatch> out = b.take_batches(100);
  REQUIRE(out.size() == 2);
  CHECK(out[0].full);
  CHECK(out[1].full);
  b.resend("org:acme");
  b.leave("org:acme", "alice");
  out = b.take_batches(200);
  REQUIRE(out.size() == 1);
  CHECK(out[0].full);
  CHECK(out[0].users.empty()); // the full batch of an empty room clears it in Redis
  CHECK(b.rooms() == 1);
}

TEST_CASE("presence config checks templates, duplicates, ttl and events placeholders") {
  CHECK(check_presence({{"org:{org}", 30, "org:{org}:presence"}, {"u:{org}:{user}", 5, "x:{user}"}})
            .empty());
  std::vector<PresenceProblem> p =
      check_presence({{"org:{nope}", 30, ""}, {"a:{org}", 0, "b:{user}"}, {"a:{org}", 30, "}"}});
  REQUIRE(p.size() == 5);
  CHECK(p[0].key == "channel");
  CHECK(p[1].key == "ttl_s");
  CHECK(p[2].key == "events");
  CHECK(p[3].key == "channel");
  CHECK(p[3].reason.find("listed twice") != std::string::npos);
  CHECK(p[4].key == "events");
}

TEST_CASE("the presence key hash-tags the whole channel") {
  CHECK(presence_key("org:acme") == "sidecar:{org:acme}:presence");
  CHECK(find_presence({{"org:{org}", 30, ""}}, "org:acme") != nullptr);
  CHECK(find_presence({{"org:{org}", 30, ""}}, "feed:acme") == nullptr);
  CHECK(presence_library().rfind("#!lua name=sidecar_presence\n", 0) == 0);
}
