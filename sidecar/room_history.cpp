// Rooms with history, sidecar.v1 or compressing members (room.h): the slow path of
// Rooms::publish, the reads a history room sends, and the resyncs it fans out. Kept apart from
// room.cpp so that the common path (no history, no sidecar.v1 member, nothing to deflate) reads
// on its own there.
//
// Every publication is framed at most twice per room, once per kind of member present (plus, for
// compressing members, once deflated per kind), and each member picks its frame in
// RoomMember::deliver(room, p); nothing is built per member.
#include <optional>

#include "frame.h"
#include "log.h"
#include "room.h"
#include "shared_frame.h"

namespace sidecar {
namespace {

SharedFrame *payload_frame(std::string_view payload) {
  return SharedFrame::make(is_valid_utf8(payload) ? Opcode::text : Opcode::binary, payload);
}

// Logged at the 1st, 2nd, 4th, 8th, ... occurrence: a publisher that sends broken headers in a
// loop costs a log line per doubling, and the counter has the exact number.
bool worth_logging(uint64_t count) { return (count & (count - 1)) == 0; }

} // namespace

void Rooms::enable_history(HistoryReads &reads, std::vector<HistoryConfig> list,
                           HistoryCounters &counters) {
  reads_ = &reads;
  history_ = std::move(list);
  history_counters_ = &counters;
}

size_t Rooms::publish_each(Room &room, std::string_view payload) {
  // With history off nothing carries our header, so nothing is parsed: the bytes go out as sent.
  LiveMessage live;
  live.payload = payload;
  if (reads_ != nullptr)
    live = parse_live_message(payload);
  switch (live.kind) {
  case LiveMessage::Kind::malformed:
    if (worth_logging(++history_counters_->live_malformed)) {
      log_warn("live_malformed",
               {{"channel", room.channel},
                {"bytes", payload.size()},
                {"count", history_counters_->live_malformed},
                {"action", "dropped: it starts with the sidecar header but does not follow it; "
                           "publish with FCALL sidecar_publish, or PUBLISH without that prefix"}});
    }
    return 0;
  case LiveMessage::Kind::plain:
    return deliver_payload(room, live.payload, nullptr);
  case LiveMessage::Kind::positioned:
    break;
  }
  // A position for a channel this sidecar keeps no history of (another sidecar's list differs):
  // the payload is relayed without a position, which promises nothing it cannot keep.
  if (!room.history)
    return deliver_payload(room, live.payload, nullptr);
  RoomHistory &h = *room.history;
  switch (h.seq.on_live(live.epoch, live.offset, live.payload)) {
  case ChannelSequence::Live::deliver: {
    StreamPosition pos{std::string(live.epoch), live.offset};
    return deliver_payload(room, live.payload, &pos);
  }
  case ChannelSequence::Live::duplicate:
    ++history_counters_->live_duplicates;
    return 0;
  case ChannelSequence::Live::held:
    return 0;
  case ChannelSequence::Live::gap:
    start_read(room);
    return 0;
  }
  return 0;
}

size_t Rooms::deliver_payload(Room &room, std::string_view payload, const StreamPosition *pos) {
  bool verbatim = room.members.size() > room.v1_members;
  FrameRef v(verbatim ? payload_frame(payload) : nullptr);
  FrameRef e(room.v1_members > 0
                 ? SharedFrame::make(Opcode::text, build_envelope(room.channel, pos, payload))
                 : nullptr);
  if ((verbatim && !v) || (room.v1_members > 0 && !e)) {
    log_error("out_of_memory", {{"channel", room.channel}, {"bytes", payload.size()}});
    return 0;
  }
  // Deflated lazily, by the first member that wants it (DeflatedFrames::get).
  std::optional<DeflatedFrames> deflated;
  DeflaterSet *deflaters = deflates(room, payload.size()) ? this->deflaters() : nullptr;
  if (deflaters != nullptr)
    deflated.emplace(*deflaters, *compression_counters_);
  size_t recipients = room.history == nullptr && room.v1_members == 0 && !deflated
                          ? fan_out(room, v.get())
                          : fan_out(room, Publication{v.get(), e.get(), pos, false,
                                                      deflated ? &*deflated : nullptr});
  counters_.frames += recipients;
  return recipients;
}

// One frame for both kinds: verbatim clients are told too, since `connected`, `pong` and
// `server_shutdown` are sidecar messages in their stream already. Only sent with history on.
size_t Rooms::send_resync(Room &room, ResyncReason reason, const StreamPosition *pos) {
  const StreamPosition *known = pos != nullptr && !pos->epoch.empty() ? pos : nullptr;
  FrameRef f(SharedFrame::make(Opcode::text, build_resync(room.channel, reason, known)));
  if (!f) {
    log_error("out_of_memory", {{"channel", room.channel}, {"what", "resync"}});
    return 0;
  }
  StreamPosition none;
  size_t recipients = fan_out(room, Publication{f.get(), f.get(), pos ? pos : &none, true});
  history_counters_->resyncs_sent[static_cast<size_t>(reason)] += recipients;
  return recipients;
}

void Rooms::start_read(Room &room) {
  RoomHistory &h = *room.history;
  if (h.token != 0 || !h.subscribed || !h.seq.reading())
    return;
  // A room that knows no position only needs the top (count 0): its first read anchors it, and
  // after a failed read its members were resynced already.
  bool anchored = h.seq.position().anchored();
  uint64_t from = anchored ? h.seq.read_from() : 0;
  uint32_t count = anchored ? h.cfg.max_recover : 0;
  if (h.ready)
    ++history_counters_->gap_reads;
  uint64_t serial = ++h.serial;
  std::string channel = room.channel;
  if (log_enabled(LogConfig::Level::debug))
    log_debug("history_read_sent", {{"channel", channel}, {"from", from}, {"count", count}});
  // The bus never calls back from inside read_history, so the token is stored before any answer.
  h.token = reads_->read_history(
      channel, from, count,
      [this, channel, serial](const HistoryReadResult &r) { read_answered(channel, serial, r); });
}

void Rooms::cancel_read(Room &room) {
  RoomHistory &h = *room.history;
  if (h.token != 0)
    reads_->cancel_history_read(h.token);
  h.token = 0;
}

void Rooms::read_answered(const std::string &channel, uint64_t serial, const HistoryReadResult &r) {
  Room *room = find(channel);
  if (room == nullptr || !room->history || room->history->serial != serial ||
      room->history->token == 0)
    return; // the room went, or this read was replaced; its token should have been cancelled
  RoomHistory &h = *room->history;
  h.token = 0;
  if (log_enabled(LogConfig::Level::debug))
    log_debug("history_read_answered", {{"channel", channel},
                                        {"top", r.read.top},
                                        {"entries", r.read.entries.size()},
                                        {"error", r.error}});
  ChannelSequence::Outcome out =
      r.error.empty() ? h.seq.on_read(r.read, h.cfg.max_recover) : h.seq.on_read_failed();
  bool first = !h.ready;
  h.ready = true;
  for (const SequenceStep &step : out.steps) {
    if (step.kind == SequenceStep::Kind::deliver) {
      size_t recipients = deliver_payload(*room, step.payload, &step.pos);
      if (step.from_read)
        history_counters_->replayed_messages += recipients;
    } else
      send_resync(*room, step.reason, &step.pos);
    // Members do not leave during fan-out, but should every one of them, the room is gone.
    if ((room = find(channel)) == nullptr)
      return;
  }
  if (first) {
    // Members that wait to read the channel themselves may ask now (RoomMember::room_ready).
    announce_ready(*room);
    if ((room = find(channel)) == nullptr)
      return;
  }
  if (out.need_read)
    start_read(*room);
}

void Rooms::on_subscribed(std::string_view channel) {
  Room *room = find(channel);
  if (room == nullptr)
    return;
  if (room->history) {
    room->history->subscribed = true;
    start_read(*room);
  } else if (room->resync_on_subscribe) {
    // Told once Redis confirms the channel again: a client that reloads from here on misses
    // nothing published after its reload.
    room->resync_on_subscribe = false;
    send_resync(*room, ResyncReason::redis_reconnected, nullptr);
  }
}

void Rooms::on_subscriber_reconnected() {
  if (reads_ == nullptr)
    return; // with history off, an outage is as silent as it always was
  for (auto &[name, room] : rooms_)
    subscription_lost(*room);
}

void Rooms::on_subscription_lost(std::string_view channel) {
  Room *room = find(channel);
  if (reads_ == nullptr || room == nullptr)
    return;
  subscription_lost(*room);
}

void Rooms::subscription_lost(Room &room) {
  if (room.history) {
    // What was published while the link was down is missing; a read in flight was asked
    // before it, so it is replaced by one sent once the SUBSCRIBE is confirmed again.
    cancel_read(room);
    room.history->subscribed = false;
    room.history->seq.need_read();
  } else {
    room.resync_on_subscribe = true;
  }
}

} // namespace sidecar
