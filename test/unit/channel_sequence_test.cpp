#include "channel_sequence.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace sidecar;

namespace {

HistoryRead make_read(std::string epoch, uint64_t top, uint64_t first, uint64_t last) {
  HistoryRead r{std::move(epoch), top, {}};
  for (uint64_t o = first; o <= last && first != 0; ++o)
    r.entries.emplace_back(o, "m" + std::to_string(o));
  return r;
}

// Steps as text: "e1:5 m5" for a delivery, "resync trimmed e1:9" for a resync.
std::vector<std::string> text(const std::vector<SequenceStep> &steps) {
  std::vector<std::string> out;
  for (const SequenceStep &s : steps) {
    std::string pos =
        s.pos.epoch.empty() ? std::string("-") : s.pos.epoch + ":" + std::to_string(s.pos.offset);
    if (s.kind == SequenceStep::Kind::deliver)
      out.push_back(pos + " " + s.payload);
    else
      out.push_back(std::string("resync ") + resync_reason_name(s.reason) + " " + pos);
  }
  return out;
}

// A room anchored at e1:last, as after its first read.
ChannelSequence anchored_room(uint64_t last, uint32_t max_held = 300) {
  ChannelSequence seq(max_held);
  CHECK(seq.reading());
  auto out = seq.on_read(make_read("e1", last, 0, 0), 300);
  CHECK(out.steps.empty());
  CHECK_FALSE(seq.reading());
  return seq;
}

std::string m(uint64_t o) { return "m" + std::to_string(o); }

} // namespace

// ---------------------------------------------------------------------------- PositionFilter

TEST_CASE("a position filter passes the next position and nothing else in its epoch") {
  PositionFilter f;
  CHECK(f.check("e1", 7) == PositionFilter::Verdict::next); // unanchored: adopts the first
  CHECK(f.check("e1", 8) == PositionFilter::Verdict::next);
  CHECK(f.check("e1", 8) == PositionFilter::Verdict::duplicate);
  CHECK(f.check("e1", 3) == PositionFilter::Verdict::duplicate);
  CHECK(f.check("e1", 10) == PositionFilter::Verdict::hole);
  CHECK(f.last() == 8);
  CHECK(f.check("e2", 2) == PositionFilter::Verdict::hole);
  CHECK(f.check("e2", 1) == PositionFilter::Verdict::next); // a new epoch, from its start
  CHECK(f.epoch() == "e2");
}

// ---------------------------------------------------------------------------- ChannelSequence

TEST_CASE("a new room holds live messages until its first read, then delivers every one") {
  // They arrived after the SUBSCRIBE was confirmed: news to the members, also the ones the read
  // (which ran after them) counts below its top.
  ChannelSequence seq(300);
  CHECK(seq.on_live("e1", 4, m(4)) == ChannelSequence::Live::held);
  CHECK(seq.on_live("e1", 5, m(5)) == ChannelSequence::Live::held);
  CHECK(seq.on_live("e1", 6, m(6)) == ChannelSequence::Live::held);
  auto out = seq.on_read(make_read("e1", 5, 0, 0), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"e1:4 m4", "e1:5 m5", "e1:6 m6"});
  CHECK_FALSE(out.need_read);
  CHECK(seq.on_live("e1", 6, m(6)) == ChannelSequence::Live::duplicate);
  CHECK(seq.on_live("e1", 7, m(7)) == ChannelSequence::Live::deliver);
}

TEST_CASE("a new room's first read anchors at the top when nothing is held") {
  ChannelSequence seq(300);
  auto out = seq.on_read(make_read("e1", 5, 0, 0), 300);
  CHECK(out.steps.empty());
  CHECK(seq.on_live("e1", 5, m(5)) == ChannelSequence::Live::duplicate);
  CHECK(seq.on_live("e1", 6, m(6)) == ChannelSequence::Live::deliver);
}

TEST_CASE("a new room's held message of an older epoch than its first read is not news") {
  // Published before the stream was reset: the read's epoch starts the room at its top.
  ChannelSequence seq(300);
  CHECK(seq.on_live("e0", 9, m(9)) == ChannelSequence::Live::held);
  auto out = seq.on_read(make_read("e1", 2, 0, 0), 300);
  CHECK(out.steps.empty());
  CHECK(seq.position().epoch() == "e1");
  CHECK(seq.position().last() == 2);
  CHECK(seq.on_live("e1", 3, m(3)) == ChannelSequence::Live::deliver);
}

TEST_CASE("live messages in order are delivered; a repeated one is dropped") {
  ChannelSequence seq = anchored_room(10);
  CHECK(seq.on_live("e1", 11, m(11)) == ChannelSequence::Live::deliver);
  CHECK(seq.on_live("e1", 12, m(12)) == ChannelSequence::Live::deliver);
  CHECK(seq.on_live("e1", 12, m(12)) == ChannelSequence::Live::duplicate);
  CHECK(seq.on_live("e1", 5, m(5)) == ChannelSequence::Live::duplicate);
  CHECK(seq.position().last() == 12);
  CHECK(seq.held() == 0);
}

TEST_CASE("a live gap holds the message, asks for a read, and the read fills the gap in order") {
  ChannelSequence seq = anchored_room(10);
  REQUIRE(seq.on_live("e1", 13, m(13)) == ChannelSequence::Live::gap);
  CHECK(seq.read_from() == 10);
  CHECK(seq.on_live("e1", 14, m(14)) == ChannelSequence::Live::held);
  auto out = seq.on_read(make_read("e1", 13, 11, 13), 300);
  CHECK(text(out.steps) ==
        std::vector<std::string>{"e1:11 m11", "e1:12 m12", "e1:13 m13", "e1:14 m14"});
  CHECK_FALSE(seq.reading());
  CHECK(seq.on_live("e1", 15, m(15)) == ChannelSequence::Live::deliver);
}

TEST_CASE("held messages that the read also returned are delivered once") {
  ChannelSequence seq = anchored_room(10);
  REQUIRE(seq.on_live("e1", 12, m(12)) == ChannelSequence::Live::gap);
  seq.on_live("e1", 13, m(13));
  seq.on_live("e1", 14, m(14));
  // The read ran after 14 was published: it returns 11..14, overlapping all the held ones.
  auto out = seq.on_read(make_read("e1", 14, 11, 14), 300);
  CHECK(text(out.steps) ==
        std::vector<std::string>{"e1:11 m11", "e1:12 m12", "e1:13 m13", "e1:14 m14"});
  CHECK(seq.position().last() == 14);
}

TEST_CASE("a gap read that finds the gap trimmed resyncs, then goes on after the top") {
  ChannelSequence seq = anchored_room(10);
  REQUIRE(seq.on_live("e1", 20, m(20)) == ChannelSequence::Live::gap);
  seq.on_live("e1", 21, m(21));
  auto out = seq.on_read(make_read("e1", 20, 15, 20), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"resync trimmed e1:20", "e1:21 m21"});
}

TEST_CASE("a gap read of too many entries resyncs too_many") {
  ChannelSequence seq = anchored_room(10);
  REQUIRE(seq.on_live("e1", 500, m(500)) == ChannelSequence::Live::gap);
  auto out = seq.on_read(make_read("e1", 500, 0, 0), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"resync too_many e1:500"});
  CHECK(seq.on_live("e1", 501, m(501)) == ChannelSequence::Live::deliver);
}

TEST_CASE("a new epoch at position 1 continues a room that missed nothing") {
  ChannelSequence seq = anchored_room(10);
  CHECK(seq.on_live("e2", 1, m(1)) == ChannelSequence::Live::deliver);
  CHECK(seq.position().epoch() == "e2");
  CHECK(seq.on_live("e2", 2, m(2)) == ChannelSequence::Live::deliver);
}

TEST_CASE("a new epoch seen past its start resyncs epoch_changed after a read") {
  ChannelSequence seq = anchored_room(10);
  REQUIRE(seq.on_live("e2", 3, m(3)) == ChannelSequence::Live::gap);
  auto out = seq.on_read(make_read("e2", 3, 1, 3), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"resync epoch_changed e2:3"});
  CHECK(seq.on_live("e2", 4, m(4)) == ChannelSequence::Live::deliver);
}

TEST_CASE("after a reconnect the room reads what it missed before anything new") {
  ChannelSequence seq = anchored_room(10);
  seq.on_live("e1", 11, m(11));
  seq.need_read(); // the subscriber link dropped and came back
  CHECK(seq.read_from() == 11);
  CHECK(seq.on_live("e1", 15, m(15)) == ChannelSequence::Live::held);
  auto out = seq.on_read(make_read("e1", 14, 12, 14), 300);
  CHECK(text(out.steps) ==
        std::vector<std::string>{"e1:12 m12", "e1:13 m13", "e1:14 m14", "e1:15 m15"});
}

TEST_CASE("after a reconnect to a Redis that lost everything, the room resyncs epoch_changed") {
  ChannelSequence seq = anchored_room(10);
  seq.need_read();
  auto out = seq.on_read(make_read("e9", 0, 0, 0), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"resync epoch_changed e9:0"});
  CHECK(seq.on_live("e9", 1, m(1)) == ChannelSequence::Live::deliver);
}

TEST_CASE("a held message of an older epoch than the read's is dropped, not a new gap") {
  ChannelSequence seq = anchored_room(10);
  seq.need_read();
  seq.on_live("e1", 11, m(11)); // published just before the keys vanished
  seq.on_live("e2", 1, m(1));   // published after the read made e2
  auto out = seq.on_read(make_read("e2", 0, 0, 0), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"resync epoch_changed e2:0", "e2:1 m1"});
  CHECK_FALSE(out.need_read);
}

TEST_CASE("a full hold drops messages, and the hole they leave asks for another read") {
  ChannelSequence seq = anchored_room(10, 2);
  REQUIRE(seq.on_live("e1", 12, m(12)) == ChannelSequence::Live::gap);
  seq.on_live("e1", 13, m(13));
  CHECK(seq.on_live("e1", 14, m(14)) == ChannelSequence::Live::held); // dropped: hold is full
  CHECK(seq.on_live("e1", 15, m(15)) == ChannelSequence::Live::held); // dropped
  CHECK(seq.dropped() == 2);
  // The read ran before 13 was published.
  auto out = seq.on_read(make_read("e1", 12, 11, 12), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"e1:11 m11", "e1:12 m12", "e1:13 m13"});
  CHECK_FALSE(out.need_read);
  // 14 and 15 are gone from the hold; 16 shows the hole.
  CHECK(seq.on_live("e1", 16, m(16)) == ChannelSequence::Live::gap);
  out = seq.on_read(make_read("e1", 16, 14, 16), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"e1:14 m14", "e1:15 m15", "e1:16 m16"});
}

TEST_CASE("a hole among held messages after a read keeps the rest held and reads again") {
  ChannelSequence seq = anchored_room(10, 2);
  seq.need_read();
  seq.on_live("e1", 12, m(12));
  seq.on_live("e1", 14, m(14));
  auto out = seq.on_read(make_read("e1", 11, 11, 11), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"e1:11 m11", "e1:12 m12"});
  REQUIRE(out.need_read);
  CHECK(seq.reading());
  CHECK(seq.read_from() == 12);
  out = seq.on_read(make_read("e1", 14, 13, 14), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"e1:13 m13", "e1:14 m14"});
}

TEST_CASE("a failed read resyncs unavailable and the room goes on from what arrives next") {
  ChannelSequence seq = anchored_room(10);
  REQUIRE(seq.on_live("e1", 13, m(13)) == ChannelSequence::Live::gap);
  seq.on_live("e1", 14, m(14));
  auto out = seq.on_read_failed();
  CHECK(text(out.steps) ==
        std::vector<std::string>{"resync unavailable -", "e1:13 m13", "e1:14 m14"});
  CHECK(seq.on_live("e1", 15, m(15)) == ChannelSequence::Live::deliver);
}

TEST_CASE("a read after a failed read that found nothing resyncs again: the gap is unknown") {
  ChannelSequence seq = anchored_room(10);
  seq.need_read();
  seq.on_read_failed();
  seq.need_read();
  auto out = seq.on_read(make_read("e1", 30, 0, 0), 300);
  CHECK(text(out.steps) == std::vector<std::string>{"resync unavailable e1:30"});
}

TEST_CASE("an answer that no read waits for changes nothing") {
  ChannelSequence seq = anchored_room(10);
  auto out = seq.on_read(make_read("e1", 20, 11, 20), 300);
  CHECK(out.steps.empty());
  CHECK(seq.position().last() == 10);
}

// ---------------------------------------------------------------------------- ResumeMerge

namespace {

std::vector<std::string> text(const ResumeMerge::Plan &p) {
  std::vector<std::string> out;
  for (const auto &s : p.steps) {
    std::string pos =
        s.pos.epoch.empty() ? std::string("-") : s.pos.epoch + ":" + std::to_string(s.pos.offset);
    if (s.kind == ResumeMerge::Step::Kind::replay)
      out.push_back("replay " + pos);
    else if (s.kind == ResumeMerge::Step::Kind::pass)
      out.push_back("pass " + pos);
    else
      out.push_back(std::string("resync ") + resync_reason_name(s.reason) + " " + pos);
  }
  return out;
}

} // namespace

TEST_CASE("a resuming session gets the missed entries, then held live ones, without repeats") {
  ResumeMerge rm(300);
  // Joined the room before reading; the room delivered 9, 10 and 11 meanwhile.
  for (uint64_t o : {9, 10, 11})
    REQUIRE(rm.hold({"e1", o}, false));
  StreamPosition client{"e1", 6};
  auto plan = rm.finish(&client, make_read("e1", 10, 7, 10), 300);
  CHECK(plan.recovered);
  CHECK(plan.start.offset == 6);
  CHECK(text(plan) == std::vector<std::string>{"replay e1:7", "replay e1:8", "replay e1:9",
                                               "replay e1:10", "pass e1:11"});
}

TEST_CASE("a resuming session at the top is recovered with only the live ones") {
  ResumeMerge rm(300);
  rm.hold({"e1", 11}, false);
  StreamPosition client{"e1", 10};
  auto plan = rm.finish(&client, make_read("e1", 10, 0, 0), 300);
  CHECK(plan.recovered);
  CHECK(text(plan) == std::vector<std::string>{"pass e1:11"});
}

TEST_CASE("a resume that cannot be recovered is one resync, then live ones after the top") {
  ResumeMerge rm(300);
  rm.hold({"e1", 40}, false);
  rm.hold({"e1", 41}, false);
  StreamPosition client{"e1", 6};
  auto plan = rm.finish(&client, make_read("e1", 40, 20, 40), 300);
  CHECK_FALSE(plan.recovered);
  CHECK(plan.start.offset == 40);
  CHECK(text(plan) == std::vector<std::string>{"resync trimmed e1:40", "pass e1:41"});
}

TEST_CASE("a fresh join starts at the top, with no resync and no replay") {
  ResumeMerge rm(300);
  rm.hold({"e1", 5}, false);
  rm.hold({"e1", 6}, false);
  auto plan = rm.finish(nullptr, make_read("e1", 5, 0, 0), 300);
  CHECK_FALSE(plan.recovered);
  CHECK(plan.start.epoch == "e1");
  CHECK(plan.start.offset == 5);
  CHECK(text(plan) == std::vector<std::string>{"pass e1:6"});
}

TEST_CASE("a room resync held during the read is passed on, and positions follow it") {
  ResumeMerge rm(300);
  rm.hold({"e1", 11}, false);
  rm.hold({"e1", 50}, true); // the room resynced; it continues after 50
  rm.hold({"e1", 51}, false);
  StreamPosition client{"e1", 10};
  auto plan = rm.finish(&client, make_read("e1", 10, 0, 0), 300);
  CHECK(text(plan) == std::vector<std::string>{"pass e1:11", "pass e1:50", "pass e1:51"});
}

TEST_CASE("a held message of the old epoch is dropped after a read of the new one") {
  ResumeMerge rm(300);
  rm.hold({"e1", 11}, false);
  rm.hold({"e2", 1}, false);
  StreamPosition client{"e1", 10};
  auto plan = rm.finish(&client, make_read("e2", 0, 0, 0), 300);
  CHECK(text(plan) == std::vector<std::string>{"resync epoch_changed e2:0", "pass e2:1"});
}

TEST_CASE("a session whose hold overflows gets one resync and nothing held") {
  ResumeMerge rm(2);
  CHECK(rm.hold({"e1", 11}, false));
  CHECK(rm.hold({"e1", 12}, false));
  CHECK_FALSE(rm.hold({"e1", 13}, false));
  StreamPosition client{"e1", 10};
  auto plan = rm.finish(&client, make_read("e1", 10, 0, 0), 300);
  CHECK_FALSE(plan.recovered);
  CHECK(text(plan) == std::vector<std::string>{"resync too_many -"});
}

TEST_CASE("a hole in what the room delivered is told, never passed silently") {
  ResumeMerge rm(300);
  rm.hold({"e1", 13}, false);
  StreamPosition client{"e1", 10};
  auto plan = rm.finish(&client, make_read("e1", 11, 11, 11), 300);
  CHECK(text(plan) ==
        std::vector<std::string>{"replay e1:11", "resync unavailable e1:12", "pass e1:13"});
}
