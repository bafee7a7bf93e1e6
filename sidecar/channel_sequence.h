// Order on one history channel, as a room and as a resuming session see it: which positioned
// messages to deliver, drop or hold, when a read is needed and what a read's answer means. Pure
// (no I/O, no uv.h): the room sends the reads and fans out what these classes say.
//
// What makes the rules sound: Redis delivers pub/sub messages on one connection in publish order
// and loses none while that connection lives. So while the subscriber link stays up, a room that
// knows its position misses nothing, and a message at position 1 of a new epoch follows the old
// epoch's last message with nothing in between (the history expired while the channel was quiet).
// Every other break (a link that dropped, a position that skips) is settled by a read, and what a
// read cannot prove complete becomes a resync, never a silent skip.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "history.h"

namespace sidecar {

// The last position a reader delivered. Unanchored until the first one is known.
class PositionFilter {
public:
  enum class Verdict {
    next,      // follows the last (or is 1 of another epoch, or the filter was unanchored): adopted
    duplicate, // at or before the last, same epoch
    hole,      // anything else; not adopted
  };
  Verdict check(std::string_view epoch, uint64_t offset);
  void anchor(std::string_view epoch, uint64_t offset);
  void unanchor() { anchored_ = false; }

  bool anchored() const { return anchored_; }
  const std::string &epoch() const { return epoch_; }
  uint64_t last() const { return last_; }

private:
  bool anchored_ = false;
  std::string epoch_;
  uint64_t last_ = 0;
};

// What to send, in order, once a read is answered.
struct SequenceStep {
  enum class Kind { deliver, resync };
  Kind kind = Kind::deliver;
  ResyncReason reason = ResyncReason::none; // resync only
  StreamPosition pos;  // deliver: the message's position; resync: where delivery continues after
  std::string payload; // deliver only
  bool from_read = false; // deliver: the entry came from the read (a replay), not from the hold
};

// A room's order on its history channel.
class ChannelSequence {
public:
  // At most `max_held` live messages wait while a read is in flight (a room uses max_recover);
  // beyond that they are dropped and counted, and the hole they leave is found like any other.
  explicit ChannelSequence(uint32_t max_held) : max_held_(max_held) {}

  enum class Live {
    deliver,   // fan it out now at this position
    duplicate, // already delivered; drop it
    held,      // a read is in flight; the payload was copied (or dropped when the hold is full)
    gap,       // a position is missing: held, and the caller must read from read_from()
  };
  Live on_live(std::string_view epoch, uint64_t offset, std::string_view payload);

  // Nothing is known until a read: a new room once its SUBSCRIBE is confirmed, or any room whose
  // subscriber link came back. Live messages are held from now on; the caller reads from
  // read_from() (count max_recover; a new room may read with count 0).
  void need_read() { reading_ = true; }
  bool reading() const { return reading_; }
  uint64_t read_from() const { return pos_.anchored() ? pos_.last() : 0; }
  const PositionFilter &position() const { return pos_; }
  size_t held() const { return held_.size(); }
  uint64_t dropped() const { return dropped_; } // held messages dropped because the hold was full

  struct Outcome {
    std::vector<SequenceStep> steps;
    bool need_read = false; // a hole remains among held messages: read again from read_from()
  };
  // The answer to the read from read_from(). The first read of a new room only anchors it, just
  // before the first held message (those arrived after the SUBSCRIBE, so they are news to every
  // member even if the read counts them), or at the top. Otherwise the entries after the last
  // delivered are delivered when decide_resume recovers them, else members get a resync and the
  // room continues after read.top; then the held messages follow, deduplicated by position.
  Outcome on_read(const HistoryRead &read, uint32_t max_recover);
  // The read failed (an error reply, the command link down). Members are told `unavailable`
  // now, and the room continues from the first message that arrives: whatever it missed was
  // published before this resync, which is what the members reload.
  Outcome on_read_failed();

private:
  struct Held {
    std::string epoch;
    uint64_t offset;
    std::string payload;
  };
  void release_held(Outcome &out);

  uint32_t max_held_;
  PositionFilter pos_;
  bool reading_ = true; // a new room knows nothing yet
  bool fresh_ = true;   // never anchored: its first read anchors it (see on_read)
  std::deque<Held> held_;
  uint64_t dropped_ = 0;
};

// One session resuming one channel (or joining it fresh, which is a resume from the top with
// nothing to replay). The session joins the room first, holds what the room delivers while its
// read is in flight, then sends what finish() says. The room's own stream is already in order,
// so only the seam between the read and the held items needs settling here.
class ResumeMerge {
public:
  explicit ResumeMerge(uint32_t max_held) : max_held_(max_held) {}

  // One item the room delivered: a message at `pos`, or a resync continuing after `pos`. The
  // caller keeps its item (a shared frame) at index held()-1 when this returns true; false means
  // the hold is full and the item is dropped (finish() then resyncs the session).
  bool hold(const StreamPosition &pos, bool is_resync);
  size_t held() const { return items_.size(); }

  struct Step {
    enum class Kind { replay, resync, pass };
    Kind kind = Kind::replay;
    size_t index = 0;                         // replay: into read.entries; pass: held item
    ResyncReason reason = ResyncReason::none; // resync only
    StreamPosition pos; // replay: the entry's; resync: where delivery continues after
  };
  struct Plan {
    bool recovered = false; // what the welcome says
    StreamPosition start;   // the position the welcome gives (before any replay)
    std::vector<Step> steps;
  };
  // `client` is the position the client sent, or nullptr for a fresh join. The read is from the
  // client's offset (count max_recover), or any read for a fresh join (count 0 will do).
  Plan finish(const StreamPosition *client, const HistoryRead &read, uint32_t max_recover);

private:
  struct Item {
    StreamPosition pos;
    bool resync;
  };
  uint32_t max_held_;
  std::vector<Item> items_;
  bool overflowed_ = false;
};

} // namespace sidecar
