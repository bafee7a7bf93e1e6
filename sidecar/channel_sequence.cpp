// Order on one history channel; see channel_sequence.h.
#include "channel_sequence.h"

namespace sidecar {

PositionFilter::Verdict PositionFilter::check(std::string_view epoch, uint64_t offset) {
  if (!anchored_ || (epoch != epoch_ && offset == 1) || (epoch == epoch_ && offset == last_ + 1)) {
    anchor(epoch, offset);
    return Verdict::next;
  }
  if (epoch == epoch_ && offset <= last_)
    return Verdict::duplicate;
  return Verdict::hole;
}

void PositionFilter::anchor(std::string_view epoch, uint64_t offset) {
  anchored_ = true;
  if (epoch != epoch_)
    epoch_.assign(epoch);
  last_ = offset;
}

ChannelSequence::Live ChannelSequence::on_live(std::string_view epoch, uint64_t offset,
                                               std::string_view payload) {
  if (!reading_) {
    switch (pos_.check(epoch, offset)) {
    case PositionFilter::Verdict::next:
      return Live::deliver;
    case PositionFilter::Verdict::duplicate:
      return Live::duplicate;
    case PositionFilter::Verdict::hole:
      reading_ = true;
      held_.push_back({std::string(epoch), offset, std::string(payload)});
      return Live::gap;
    }
  }
  if (held_.size() < max_held_)
    held_.push_back({std::string(epoch), offset, std::string(payload)});
  else
    ++dropped_;
  return Live::held;
}

ChannelSequence::Outcome ChannelSequence::on_read(const HistoryRead &read, uint32_t max_recover) {
  Outcome out;
  if (!reading_)
    return out; // an answer nobody waits for any more (the caller should not pass it on)
  reading_ = false;
  StreamPosition after{read.epoch, read.top};
  if (fresh_) {
    fresh_ = false;
    // Held messages arrived after the SUBSCRIBE was confirmed, so they are news to every member
    // even when the read (sent after that) already counts them: the room starts just before
    // the first of them. Members that read for themselves drop what their own read covers.
    const bool news = !held_.empty() && held_.front().epoch == read.epoch &&
                      held_.front().offset >= 1 && held_.front().offset <= read.top;
    pos_.anchor(read.epoch, news ? held_.front().offset - 1 : read.top);
  } else if (!pos_.anchored()) {
    // A failed read already resynced the members, but what was missed since then is unknown.
    out.steps.push_back({SequenceStep::Kind::resync, ResyncReason::unavailable, after, {}});
    pos_.anchor(read.epoch, read.top);
  } else {
    ResumeDecision d = decide_resume(pos_.epoch(), pos_.last(), read, max_recover);
    if (d.recovered) {
      for (size_t i = d.first; i < d.first + d.count; ++i) {
        const auto &[offset, payload] = read.entries[i];
        out.steps.push_back(
            {SequenceStep::Kind::deliver, ResyncReason::none, {read.epoch, offset}, payload, true});
      }
    } else {
      out.steps.push_back({SequenceStep::Kind::resync, d.reason, after, {}});
    }
    pos_.anchor(read.epoch, read.top);
  }
  release_held(out);
  return out;
}

ChannelSequence::Outcome ChannelSequence::on_read_failed() {
  Outcome out;
  if (!reading_)
    return out;
  reading_ = false;
  fresh_ = false;
  out.steps.push_back({SequenceStep::Kind::resync, ResyncReason::unavailable, {}, {}});
  pos_.unanchor();
  release_held(out);
  return out;
}

void ChannelSequence::release_held(Outcome &out) {
  // Every held message arrived before the read's answer. One of another epoch that does not
  // start it was published before the read saw the newer epoch: the resync already covers it.
  while (!held_.empty()) {
    Held &h = held_.front();
    PositionFilter::Verdict v = pos_.check(h.epoch, h.offset);
    if (v == PositionFilter::Verdict::next) {
      out.steps.push_back({SequenceStep::Kind::deliver,
                           ResyncReason::none,
                           {std::move(h.epoch), h.offset},
                           std::move(h.payload)});
    } else if (v == PositionFilter::Verdict::hole && h.epoch == pos_.epoch()) {
      // Missing positions within the epoch (held messages dropped when the hold was full):
      // read again and keep the rest held.
      reading_ = true;
      out.need_read = true;
      return;
    }
    held_.pop_front();
  }
}

bool ResumeMerge::hold(const StreamPosition &pos, bool is_resync) {
  if (overflowed_ || items_.size() >= max_held_) {
    overflowed_ = true;
    return false;
  }
  items_.push_back({pos, is_resync});
  return true;
}

ResumeMerge::Plan ResumeMerge::finish(const StreamPosition *client, const HistoryRead &read,
                                      uint32_t max_recover) {
  Plan plan;
  plan.start = {read.epoch, read.top};
  if (overflowed_) {
    // The room delivered more than the hold takes while the read was in flight. Whatever was
    // dropped was published before this resync, so the client's reload covers it; the position
    // is unknown until the next message.
    plan.steps.push_back({Step::Kind::resync, 0, ResyncReason::too_many, {}});
    return plan;
  }
  if (client != nullptr) {
    ResumeDecision d = decide_resume(client->epoch, client->offset, read, max_recover);
    if (d.recovered) {
      plan.recovered = true;
      plan.start = *client;
      for (size_t i = d.first; i < d.first + d.count; ++i)
        plan.steps.push_back(
            {Step::Kind::replay, i, ResyncReason::none, {read.epoch, read.entries[i].first}});
    } else {
      plan.steps.push_back({Step::Kind::resync, 0, d.reason, plan.start});
    }
  }
  PositionFilter f;
  f.anchor(read.epoch, read.top);
  for (size_t i = 0; i < items_.size(); ++i) {
    const Item &it = items_[i];
    if (it.resync) {
      plan.steps.push_back({Step::Kind::pass, i, ResyncReason::none, it.pos});
      if (it.pos.epoch.empty())
        f.unanchor();
      else
        f.anchor(it.pos.epoch, it.pos.offset);
      continue;
    }
    PositionFilter::Verdict v = f.check(it.pos.epoch, it.pos.offset);
    if (v == PositionFilter::Verdict::hole && it.pos.epoch == f.epoch()) {
      // The room's stream is in order, so this cannot happen unless the room itself skipped;
      // the client is told rather than handed a hole.
      plan.steps.push_back(
          {Step::Kind::resync, 0, ResyncReason::unavailable, {it.pos.epoch, it.pos.offset - 1}});
      f.anchor(it.pos.epoch, it.pos.offset);
      v = PositionFilter::Verdict::next;
    }
    // A hole of another epoch is a message published before the read saw the newer one.
    if (v == PositionFilter::Verdict::next)
      plan.steps.push_back({Step::Kind::pass, i, ResyncReason::none, it.pos});
  }
  return plan;
}

} // namespace sidecar
