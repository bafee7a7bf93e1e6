// A session's history between its upgrade and its welcome; see session_resume.h.
//
// Order of events for one channel C with history:
//   1. The session joins C's room (Session::upgrade), so from now on the room hands it every
//      delivery on C; they are held here (hold), with their positions in a ResumeMerge.
//   2. Once the room is ready (its own first read answered: RoomMember::room_ready, or at once
//      when it already was), the session reads C: from the client's offset with count
//      max_recover, or only the top (count 0) for a fresh join. Asking any earlier could skip
//      the positions between this read and the room's anchor.
//   3. The answer settles the seam (ResumeMerge::finish): replay what the client missed and
//      pass the held deliveries after it, or resync; a failed read or the deadline resyncs
//      `unavailable` and passes what was held.
//   4. When every channel is settled: the welcome with every channel's position, then each
//      channel's frames in order, then what rooms without history delivered meanwhile.
#include "session_resume.h"

#include "config.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "room.h"
#include "session.h"

namespace sidecar {
namespace {

FrameRef share(SharedFrame *f) {
  if (f != nullptr)
    f->ref();
  return FrameRef(f);
}

SharedFrame *entry_frame(std::string_view channel, const HistoryRead &read, size_t i, bool v1) {
  const auto &[offset, payload] = read.entries[i];
  if (!v1) {
    return SharedFrame::make(is_valid_utf8(payload) ? Opcode::text : Opcode::binary, payload);
  }
  StreamPosition pos{read.epoch, offset};
  return SharedFrame::make(Opcode::text, build_envelope(channel, &pos, payload));
}

} // namespace

SharedFrame *ReplayFrames::frame(std::string_view channel, const HistoryRead &read, size_t i,
                                 bool v1) {
  uint64_t first = read.entries.empty() ? 0 : read.entries.front().first;
  if (channel != channel_ || read.epoch != epoch_ || read.top != top_ ||
      read.entries.size() != count_ || first != first_) {
    clear();
    channel_.assign(channel);
    epoch_ = read.epoch;
    top_ = read.top;
    count_ = read.entries.size();
    first_ = first;
    verbatim_.resize(count_);
    envelope_.resize(count_);
  }
  FrameRef &slot = v1 ? envelope_[i] : verbatim_[i];
  if (!slot)
    slot = FrameRef(entry_frame(channel, read, i, v1));
  return slot.get();
}

void ReplayFrames::clear() {
  verbatim_.clear();
  envelope_.clear();
  channel_.clear();
  count_ = 0;
}

void Session::start_resume(std::string_view welcome_json, std::vector<RecoverRequest> recover,
                           Room *only) noexcept {
  try {
    auto r = std::make_unique<SessionResume>();
    for (uint32_t i = 0; i < rooms_.size(); ++i) {
      Room *room = rooms_.room(i);
      if (!room->history || (only != nullptr && room != only))
        continue;
      SessionResume::Channel &c = r->channels.emplace_back(room, room->history->cfg.max_recover);
      c.welcome.channel = room->channel;
      for (RecoverRequest &req : recover) {
        if (req.channel == room->channel)
          c.client = std::move(req.pos);
      }
    }
    if (r->channels.empty()) {
      // No channel with history here: the welcome as without it (sidecar.v1: `channels` empty).
      if (v1_)
        send_v1_welcome(welcome_json, {});
      else
        send_json(welcome_json);
      return;
    }
    r->welcome.assign(welcome_json);
    r->started_ms = env_.now_ms();
    if (resume_ != nullptr) // an earlier read's floors, still being passed (a subscribe's read)
      r->floors = std::move(resume_->floors);
    resume_ = std::move(r);
  } catch (const std::exception &e) {
    log_error("out_of_memory", {{"conn", id_}, {"what", "resume"}, {"error", e.what()}});
    close(CloseCode::internal_error, "internal error");
    return;
  }
  for (size_t i = 0; resume_ != nullptr && i < resume_->channels.size(); ++i) {
    if (resume_->channels[i].room->history->ready)
      ask_read(i, true);
  }
}

bool Session::resuming() const noexcept { return resume_ != nullptr && !resume_->welcomed; }

void Session::room_ready(Room *room) noexcept {
  if (!resuming())
    return;
  for (size_t i = 0; i < resume_->channels.size(); ++i) {
    if (resume_->channels[i].room == room && !resume_->channels[i].asked)
      ask_read(i, true);
  }
}

// `shared`: the read may be one already on the wire, when the room knows its position (see
// SessionResume::Channel::floor); a reconnect storm then costs one read per room and position.
void Session::ask_read(size_t i, bool shared) noexcept {
  SessionResume::Channel &c = resume_->channels[i];
  c.asked = true;
  uint64_t from = c.client ? c.client->offset : 0;
  uint32_t count = c.client ? c.max_recover : 0;
  try {
    const PositionFilter &room_pos = c.room->history->seq.position();
    c.shared = shared && room_pos.anchored();
    if (c.shared)
      c.floor = StreamPosition{room_pos.epoch(), room_pos.last()};
    // The waiter is cancelled in end_resume, which every close path runs before this session can
    // be freed, so `this` is alive whenever the bus calls it.
    auto cb = [this, i](const HistoryReadResult &r) { read_done(i, r); };
    c.token = c.shared ? env_.history->read_history_shared(c.room->channel, from, count, cb)
                       : env_.history->read_history(c.room->channel, from, count, cb);
  } catch (const std::exception &) {
    finish_channel(i, nullptr);
    welcome_when_done();
  }
}

void Session::read_done(size_t i, const HistoryReadResult &r) noexcept {
  if (!resuming() || i >= resume_->channels.size() || resume_->channels[i].done)
    return;
  SessionResume::Channel &c = resume_->channels[i];
  c.token = 0;
  if (c.shared && r.error.empty() &&
      (r.read.epoch != c.floor->epoch || r.read.top < c.floor->offset)) {
    // A read from before the room delivered what it had when this one was asked: the positions
    // between its top and that floor are neither in it nor held. Read again, written after now.
    ++env_.metrics.history.stale_shared_reads;
    ask_read(i, false);
    return;
  }
  if (!r.error.empty()) {
    log_debug("resume_read_failed",
              {{"conn", id_}, {"channel", c.room->channel}, {"error", r.error}});
  }
  finish_channel(i, r.error.empty() ? &r.read : nullptr);
  welcome_when_done();
}

SharedFrame *Session::replay_frame(std::string_view channel, const HistoryRead &read, size_t i,
                                   FrameRef &own) noexcept {
  if (env_.replay != nullptr)
    return env_.replay->frame(channel, read, i, v1_);
  own = FrameRef(entry_frame(channel, read, i, v1_));
  return own.get();
}

// Settles one channel: its welcome entry and the frames that follow the welcome, in order. With
// no read (it failed, or the deadline passed) the client is told `unavailable` and gets what the
// room delivered meanwhile: the room's own order holds from there, and the client reloads.
void Session::finish_channel(size_t i, const HistoryRead *read) noexcept {
  SessionResume &res = *resume_;
  SessionResume::Channel &c = res.channels[i];
  if (c.token != 0) {
    env_.history->cancel_history_read(c.token);
    c.token = 0;
  }
  c.done = true;
  HistoryCounters &counters = env_.metrics.history;
  const std::string &channel = c.room->channel;
  std::vector<SessionResume::Item> out;
  auto resync = [&](ResyncReason reason, const StreamPosition *pos) {
    const StreamPosition *known = pos != nullptr && !pos->epoch.empty() ? pos : nullptr;
    out.push_back({FrameRef(SharedFrame::make(Opcode::text, build_resync(channel, reason, known))),
                   -1, false});
    ++counters.resyncs_sent[static_cast<size_t>(reason)];
  };
  try {
    if (read == nullptr) {
      c.welcome.known = false;
      if (c.client)
        ++counters.resumes_refused[static_cast<size_t>(ResyncReason::unavailable)];
      resync(ResyncReason::unavailable, nullptr);
      for (SessionResume::Item &item : c.held)
        out.push_back(std::move(item));
    } else {
      ResumeMerge::Plan plan =
          c.merge.finish(c.client ? &*c.client : nullptr, *read, c.max_recover);
      if (read->top > 0)
        res.floors.push_back({c.room, read->epoch, read->top});
      c.welcome.known = true;
      c.welcome.epoch = plan.start.epoch;
      c.welcome.offset = plan.start.offset;
      c.welcome.recovered = plan.recovered;
      if (c.client && plan.recovered) {
        ++counters.resumes_recovered;
      } else if (c.client) {
        ResyncReason why = ResyncReason::unavailable;
        for (const ResumeMerge::Step &s : plan.steps) {
          if (s.kind == ResumeMerge::Step::Kind::resync) {
            why = s.reason;
            break;
          }
        }
        ++counters.resumes_refused[static_cast<size_t>(why)];
      }
      // The plan lists replays and resyncs first, then the held items it passes in their order
      // (a resync it inserts comes right before the item it concerns). Items without a position
      // are not in the plan and keep their place among the held ones.
      size_t s = 0;
      auto emit_until_pass = [&] {
        for (; s < plan.steps.size() && plan.steps[s].kind != ResumeMerge::Step::Kind::pass; ++s) {
          const ResumeMerge::Step &step = plan.steps[s];
          if (step.kind == ResumeMerge::Step::Kind::resync) {
            resync(step.reason, &step.pos);
            continue;
          }
          FrameRef own;
          SharedFrame *f = replay_frame(channel, *read, step.index, own);
          out.push_back({share(f), -1, true});
          ++counters.replayed_messages;
        }
      };
      emit_until_pass();
      for (SessionResume::Item &item : c.held) {
        if (item.merge < 0) {
          out.push_back(std::move(item));
          continue;
        }
        if (s < plan.steps.size() && plan.steps[s].index == static_cast<size_t>(item.merge)) {
          out.push_back(std::move(item));
          ++s;
          emit_until_pass();
        }
        // Otherwise the read covered it already: a duplicate, dropped.
      }
    }
  } catch (const std::exception &e) {
    // Out of memory building frames: whatever was built is not a complete replay. The session
    // is closed (by welcome_when_done, outside this function, since closing ends the resume).
    out.clear();
    log_error("out_of_memory", {{"conn", id_}, {"what", "replay"}, {"error", e.what()}});
    res.failed = true;
  }
  c.held.clear();
  c.out = std::move(out);
}

void Session::hold(Room *room, const Publication &p, SharedFrame *f) noexcept {
  if (f == nullptr)
    return; // nothing for this kind of member (a resync verbatim clients are not sent)
  SessionResume &res = *resume_;
  SessionResume::Channel *c = nullptr;
  for (SessionResume::Channel &ch : res.channels) {
    if (room != nullptr && ch.room == room)
      c = &ch;
  }
  // A room settled by an earlier read (whose floor is still being passed) while a subscribe's
  // read holds everything: what that earlier read covered is dropped here as after a welcome.
  if (c == nullptr && room != nullptr && !res.floors.empty() && covered_by_read(room, p))
    return;
  res.held_bytes += f->size();
  if (res.held_bytes > env_.cfg.limits.max_outbound_bytes) {
    // Held frames count against the byte budget like queued ones: a client whose welcome is
    // late cannot make us keep more for it than one that reads slowly.
    over_budget_ = true;
    request_flush();
    return;
  }
  try {
    SessionResume::Item item{share(f), -1, !p.resync};
    if (c == nullptr) {
      res.other.push_back(std::move(item));
    } else if (c->done) {
      c->out.push_back(std::move(item));
    } else {
      if (p.pos != nullptr) {
        // The hold is full: the item is dropped and finish() resyncs this channel.
        if (!c->merge.hold(*p.pos, p.resync))
          return;
        item.merge = static_cast<int>(c->merge.held() - 1);
      }
      c->held.push_back(std::move(item));
    }
  } catch (const std::exception &) {
    over_budget_ = true; // out of memory: closed like a client over its budget
    request_flush();
  }
}

// A sidecar.v1 welcome always has `channels`, `{}` when no channel of the connection has
// history (or history is off), so that a client can read it without checking that it exists.
void Session::send_v1_welcome(std::string_view welcome_json,
                              const std::vector<WelcomeChannel> &channels) noexcept {
  std::string welcome;
  try {
    welcome = welcome_with_channels(welcome_json, channels);
  } catch (const std::exception &e) {
    log_error("out_of_memory", {{"conn", id_}, {"what", "welcome"}, {"error", e.what()}});
    close(CloseCode::internal_error, "internal error");
    return;
  }
  send_json(welcome);
}

bool Session::covered_by_read(const Room *room, const Publication &p) noexcept {
  std::vector<ResumeFloor> &floors = resume_->floors;
  for (size_t i = 0; i < floors.size(); ++i) {
    ResumeFloor &fl = floors[i];
    if (fl.room != room)
      continue;
    if (p.pos == nullptr)
      return false; // a plain PUBLISH: no position to compare, and it was never in the read
    if (!p.resync && p.pos->epoch == fl.epoch && p.pos->offset <= fl.top) {
      ++env_.metrics.history.live_duplicates;
      return true;
    }
    floors.erase(floors.begin() + static_cast<std::ptrdiff_t>(i));
    if (floors.empty() && resume_->welcomed)
      resume_.reset();
    return false;
  }
  return false;
}

void Session::welcome_when_done() noexcept {
  if (!resuming())
    return;
  for (const SessionResume::Channel &c : resume_->channels) {
    if (!c.done)
      return;
  }
  std::unique_ptr<SessionResume> res = std::move(resume_);
  if (res->failed) {
    close(CloseCode::internal_error, "internal error");
    return;
  }
  std::string welcome;
  try {
    std::vector<WelcomeChannel> channels;
    for (SessionResume::Channel &c : res->channels)
      channels.push_back(std::move(c.welcome));
    welcome = welcome_with_channels(res->welcome, channels);
  } catch (const std::exception &e) {
    log_error("out_of_memory", {{"conn", id_}, {"what", "welcome"}, {"error", e.what()}});
    close(CloseCode::internal_error, "internal error");
    return;
  }
  send_json(welcome);
  if (!res->floors.empty()) {
    try {
      resume_ = std::make_unique<SessionResume>();
      resume_->welcomed = true;
      resume_->floors = std::move(res->floors);
    } catch (const std::exception &) {
      resume_.reset(); // out of memory: duplicates are not filtered, nothing is lost
    }
  }
  auto send = [this](SessionResume::Item &item) {
    if (item.frame && queue(item.frame.get()) && item.message)
      ++messages_out_;
  };
  for (SessionResume::Channel &c : res->channels) {
    for (SessionResume::Item &item : c.out)
      send(item);
  }
  for (SessionResume::Item &item : res->other)
    send(item);
  run_pending_subscriptions(); // what the client asked while this was read, in order
}

void Session::end_resume() noexcept {
  if (resume_ == nullptr)
    return;
  for (SessionResume::Channel &c : resume_->channels) {
    if (c.token != 0 && env_.history != nullptr)
      env_.history->cancel_history_read(c.token);
  }
  resume_.reset();
}

} // namespace sidecar
