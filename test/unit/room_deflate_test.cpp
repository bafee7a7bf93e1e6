// Rooms with members that agreed permessage-deflate (room_deflate.cpp): a publication is
// deflated once, lazily, shared by every compressing member, and never built at all when no
// member compresses, when it is below min_bytes, or when compression is off.
#include <doctest/doctest.h>
#include <zlib.h>

#include <string>
#include <vector>

#include "room.h"
#include "shared_frame.h"

using namespace sidecar;

namespace {

struct NullBus final : Subscriber {
  void subscribe(const std::string &) override {}
  void unsubscribe(const std::string &) override {}
};

// Takes its frame as a session does: the compressed one for its window when the room built it.
struct Member final : RoomMember {
  Memberships rooms;
  uint8_t bits = 0; // 0: did not agree permessage-deflate
  std::vector<SharedFrame *> got;
  explicit Member(uint8_t b = 0) : bits(b) {}
  Member(const Member &) = delete;
  Member &operator=(const Member &) = delete;
  ~Member() {
    for (SharedFrame *f : got)
      f->unref();
  }
  void deliver(SharedFrame *f) noexcept override {
    f->ref();
    got.push_back(f);
  }
  void deliver(Room *, const Publication &p) noexcept override {
    SharedFrame *f = p.verbatim;
    if (bits != 0 && p.deflated != nullptr)
      if (SharedFrame *c = p.deflated->get(f, bits))
        f = c;
    deliver(f);
  }
  void moved_in_room(Room *room, uint32_t slot) noexcept override { rooms.moved(room, slot); }
};

struct World {
  NullBus bus;
  PublishCounters publish;
  CompressionCounters counters;
  DeflateOptions options;
  Rooms rooms{bus, publish};
  World() { rooms.enable_compression(options, counters); }
  void join(Member &m, const std::string &channel = "org:a") {
    REQUIRE(m.rooms.join(rooms, channel, &m, false, m.bits != 0));
  }
};

std::string json_event(size_t n) {
  std::string s = R"({"type":"SYNC_SUCCESS","items":[)";
  while (s.size() + 40 < n)
    s += R"({"id":"pfa-123","name":"Zoe"},)";
  s += "0]}";
  return s;
}

std::string inflate_raw(std::string_view in, int bits = 15) {
  z_stream z{};
  REQUIRE(inflateInit2(&z, -bits) == Z_OK);
  std::string src(in);
  src.append("\x00\x00\xff\xff", 4);
  std::string out(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef *>(src.data());
  z.avail_in = static_cast<uInt>(src.size());
  z.next_out = reinterpret_cast<Bytef *>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&z, Z_SYNC_FLUSH);
  CHECK((rc == Z_OK || rc == Z_STREAM_END));
  out.resize(out.size() - z.avail_out);
  inflateEnd(&z);
  return out;
}

size_t header_size(const SharedFrame &f) {
  uint8_t len7 = f.data()[1] & 0x7f;
  return len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
}

std::string_view payload_of(const SharedFrame &f) {
  size_t h = header_size(f);
  return std::string_view(reinterpret_cast<const char *>(f.data()) + h, f.size() - h);
}

} // namespace

TEST_CASE("compressing members share one deflated RSV1 frame; the others get the plain one") {
  World w;
  Member a(15), b(15), plain;
  w.join(a);
  w.join(b);
  w.join(plain);
  std::string msg = json_event(2048);
  CHECK(w.rooms.publish("org:a", msg) == 3);
  REQUIRE(a.got.size() == 1);
  REQUIRE(b.got.size() == 1);
  REQUIRE(plain.got.size() == 1);
  CHECK(a.got[0] == b.got[0]); // the same allocation: deflated once
  CHECK(a.got[0]->data()[0] == 0xc1);
  CHECK(plain.got[0]->data()[0] == 0x81);
  CHECK(payload_of(*plain.got[0]) == msg);
  CHECK(inflate_raw(payload_of(*a.got[0])) == msg);
  CHECK(w.counters.frames_built == 1);
  CHECK(w.counters.bytes_before == msg.size());
  CHECK(w.counters.bytes_after == payload_of(*a.got[0]).size());
}

TEST_CASE("nothing is deflated without a compressing member, below min_bytes, or when off") {
  World w;
  Member plain, c(15);
  w.join(plain);
  std::string msg = json_event(2048);
  w.rooms.publish("org:a", msg);
  CHECK(w.counters.frames_built == 0);

  w.join(c);
  w.rooms.publish("org:a", std::string(w.options.min_bytes - 1, 'a'));
  CHECK(w.counters.frames_built == 0);
  CHECK(c.got.back()->data()[0] == 0x81);

  w.options.enabled = false; // a reload: connections that agreed get plain frames from now on
  w.rooms.publish("org:a", msg);
  CHECK(w.counters.frames_built == 0);
  CHECK(c.got.back()->data()[0] == 0x81);

  w.options.enabled = true;
  w.rooms.publish("org:a", msg);
  CHECK(w.counters.frames_built == 1);
  CHECK(c.got.back()->data()[0] == 0xc1);
}

TEST_CASE("a payload deflate does not shrink goes out plain to compressing members too") {
  World w;
  Member c(15);
  w.join(c);
  std::string noise;
  uint32_t x = 12345;
  for (int i = 0; i < 4096; ++i) {
    x = x * 1103515245 + 12345;
    noise.push_back(static_cast<char>(x >> 24));
  }
  w.rooms.publish("org:a", noise);
  REQUIRE(c.got.size() == 1);
  CHECK(c.got[0]->data()[0] == 0x82);
  CHECK(payload_of(*c.got[0]) == noise);
  CHECK(w.counters.not_smaller == 1);
  CHECK(w.counters.frames_built == 0);
}

TEST_CASE("members with different windows get one deflate per window, each readable with it") {
  World w;
  Member big1(15), big2(15), small(10);
  w.join(big1);
  w.join(small);
  w.join(big2);
  std::string block;
  uint32_t x = 7;
  for (int i = 0; i < 1500; ++i) {
    x = x * 1103515245 + 12345;
    block.push_back(static_cast<char>('a' + (x >> 24) % 26));
  }
  std::string msg = block + block; // the repeat is 1500 bytes back: out of a 10-bit window
  w.rooms.publish("org:a", msg);
  CHECK(big1.got[0] == big2.got[0]);
  CHECK(small.got[0] != big1.got[0]);
  CHECK(inflate_raw(payload_of(*small.got[0]), 10) == msg);
  CHECK(inflate_raw(payload_of(*big1.got[0])) == msg);
  CHECK(w.counters.frames_built == 2);
}

TEST_CASE("a member leaving uncounts its compression, and a new level applies at once") {
  World w;
  Member c(15);
  w.join(c);
  Room *room = w.rooms.find("org:a");
  REQUIRE(room != nullptr);
  CHECK(room->deflate_members == 1);
  std::string msg = json_event(4096);
  w.rooms.publish("org:a", msg);
  std::string level1(payload_of(*c.got.back()));
  w.options.level = 9;
  w.rooms.publish("org:a", msg);
  std::string level9(payload_of(*c.got.back()));
  CHECK(inflate_raw(level9) == msg);
  CHECK(level9.size() <= level1.size());
  Member other;
  w.join(other);
  c.rooms.leave_all(w.rooms, false, true);
  CHECK(room->deflate_members == 0);
  w.rooms.publish("org:a", msg);
  CHECK(w.counters.frames_built == 2);
}
