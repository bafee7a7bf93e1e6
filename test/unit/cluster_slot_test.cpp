// Key slots against Redis's own vectors: the CRC16 test string from Redis's crc16.c, the hash
// tag examples of the Redis Cluster specification, and slots that `CLUSTER KEYSLOT` answered on
// Redis 7.0 for the keys and channels the sidecar uses.
#include "cluster_slot.h"

#include <doctest/doctest.h>

#include <string>

using namespace sidecar;
using namespace std::string_view_literals;

TEST_CASE("crc16 of 123456789 is Redis's check value 0x31C3") {
  CHECK(crc16_xmodem("123456789") == 0x31C3);
  CHECK(crc16_xmodem("") == 0);
  CHECK(cluster_slot("123456789") == 0x31C3); // below 16384, so the slot is the CRC itself
}

TEST_CASE("slots of plain keys are those CLUSTER KEYSLOT answers") {
  CHECK(cluster_slot("foo") == 12182);
  CHECK(cluster_slot("bar") == 5061);
  CHECK(cluster_slot("somekey") == 11058);
  CHECK(cluster_slot("") == 0);
  CHECK(cluster_slot("org:acme") == 457);
}

TEST_CASE("keys with the same hash tag share a slot") {
  CHECK(cluster_slot("{user1000}.following") == 3443);
  CHECK(cluster_slot("{user1000}.followers") == 3443);
  // History keys hash-tag the whole channel name, so they live in the channel's slot.
  CHECK(cluster_slot("sidecar:{org:acme}:s") == cluster_slot("org:acme"));
  CHECK(cluster_slot("sidecar:{org:acme}:m") == cluster_slot("org:acme"));
}

TEST_CASE("the hash tag is the first non-empty {...}, else the whole key") {
  CHECK(cluster_hash_tag("foo{bar}{zap}") == "bar");
  CHECK(cluster_slot("foo{bar}{zap}") == 5061);
  CHECK(cluster_hash_tag("foo{{bar}}zap") == "{bar");
  CHECK(cluster_slot("foo{{bar}}zap") == 4015);
  CHECK(cluster_hash_tag("foo{}{bar}") == "foo{}{bar}");
  CHECK(cluster_slot("foo{}{bar}") == 8363);
  CHECK(cluster_slot("{}") == 15257);
  CHECK(cluster_slot("{") == 4092);
  CHECK(cluster_hash_tag("a}b{c") == "a}b{c");
}

TEST_CASE("bytes above 0x7f are hashed as unsigned bytes") {
  CHECK(cluster_slot("\xff\x80"
                     "ab") == 1030);
  CHECK(cluster_slot("sidecar:broadcast") == 4449);
}
