// A session's history (issue 11) between its upgrade and its welcome: for each channel it joins
// that has history, one read of the stream (from the client's position, or only the top for a
// fresh join), the room's deliveries held meanwhile and merged by position (ResumeMerge), then
// the welcome with every channel's position, the replayed entries and what was held, with no
// duplicate and no hole. Session::start_resume and its neighbours (session_resume.cpp) run it;
// this header is shared by session.cpp, session_resume.cpp and the Server (ReplayFrames).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "channel_sequence.h"
#include "client_messages.h"
#include "history_reads.h"
#include "shared_frame.h"

namespace sidecar {

struct Room;

// Frames of history entries for resuming sessions. One coalesced read answers all its waiters
// one after another within one loop turn, with one HistoryRead; each entry is framed once per
// kind for all of them instead of once per session. It holds the entries of one read at a time,
// recognised by content (channel, epoch, top, count and first offset name the same entries,
// since within an epoch a position names one payload), and the Server clears it every loop turn
// so that nothing outlives the replay.
class ReplayFrames {
public:
  // The frame of read.entries[i] of `channel` for a member of kind v1 (owned here until the
  // next clear or another read); null when out of memory.
  SharedFrame *frame(std::string_view channel, const HistoryRead &read, size_t i, bool v1);
  void clear();

private:
  std::string channel_, epoch_;
  uint64_t top_ = 0, first_ = 0;
  size_t count_ = 0;
  std::vector<FrameRef> verbatim_, envelope_;
};

// After a channel is settled: the live messages its room may still hand over that the read
// covered already. The read's reply comes on the command link and can overtake the subscriber
// link, so publications at or below the read's top can arrive live after it; they were replayed
// (or precede the position the welcome gives) and are dropped. The entry goes with the first
// message past it, of another epoch, or a resync.
struct ResumeFloor {
  const Room *room;
  std::string epoch;
  uint64_t top;
};

struct SessionResume {
  // One frame on its way to the client; `merge` is its index in the channel's ResumeMerge, or -1
  // for an item without a position (a plain PUBLISH).
  struct Item {
    FrameRef frame;
    int merge = -1;
    bool message = true; // counted as a delivered message (not a resync)
  };
  struct Channel {
    Channel(Room *r, uint32_t max) : room(r), max_recover(max), merge(max) {}
    Room *room;
    uint32_t max_recover;
    std::optional<StreamPosition> client; // the position the client sent; none: a fresh join
    ResumeMerge merge;
    std::vector<Item> held; // what the room delivered while the read was out
    HistoryReadToken token = 0;
    bool asked = false; // the read was asked (only once the room is ready)
    // The read may be one already on the wire (HistoryReads::read_history_shared); its answer
    // then counts only if it reaches what the room had delivered when it was asked, `floor`:
    // everything after that the session holds. Otherwise it is asked again, written after.
    bool shared = false;
    std::optional<StreamPosition> floor;
    bool done = false;
    std::vector<Item> out; // once done: what follows the welcome, in order
    WelcomeChannel welcome;
  };
  std::vector<Channel> channels;
  std::vector<Item> other; // deliveries of rooms without history, held behind the welcome
  uint64_t held_bytes = 0; // everything held, against limits.max_outbound_bytes
  bool failed = false;     // out of memory while settling a channel: the session closes
  std::string welcome;
  uint64_t started_ms = 0;
  std::vector<ResumeFloor> floors; // one per settled channel whose read saw a top
  bool welcomed = false; // sent: only `floors` is left, until the rooms pass them
};

} // namespace sidecar
