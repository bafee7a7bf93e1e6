// TimerWheel: one deadline per object for many objects that are rarely due (a hashed timing
// wheel). Each object embeds an Entry, two links and its deadline, and the wheel keeps it in the
// slot of the tick its deadline falls in. advance() visits only the slots of the ticks that passed
// since the last call, so an entry costs nothing until its slot comes round: sessions that are not
// due for a ping or a timeout are not looked at.
//
// Pure (no uv): the Server calls advance() from a repeating timer of `resolution_ms`, and the
// unit tests call it with any clock they like. Deadlines are in the caller's milliseconds.
//
// An entry further away than one turn of the wheel (slots * resolution_ms) is looked at once per
// turn until it is due; with the defaults that is minutes, longer than any session deadline
// except a far token expiry, and an open session always has a ping sooner than that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sidecar {

class TimerWheel {
public:
  // Embedded in the object it schedules (a Session derives from it). Unlinks itself when
  // destroyed, so an object may go away while scheduled; it needs no pointer to its wheel.
  class Entry {
  public:
    Entry() = default;
    ~Entry() { unlink(); }
    Entry(const Entry &) = delete;
    Entry &operator=(const Entry &) = delete;

    bool scheduled() const noexcept { return next_ != nullptr; }
    uint64_t deadline() const noexcept { return deadline_; }
    void cancel() noexcept { unlink(); }

  private:
    friend class TimerWheel;
    void unlink() noexcept;

    Entry *prev_ = nullptr; // both null while not scheduled
    Entry *next_ = nullptr;
    uint64_t deadline_ = 0;
  };

  // `now_ms` is the clock at construction; `slots` is rounded up to a power of two.
  TimerWheel(uint64_t now_ms, uint64_t resolution_ms, uint32_t slots = 512);
  ~TimerWheel(); // unschedules every entry still in it
  TimerWheel(const TimerWheel &) = delete;
  TimerWheel &operator=(const TimerWheel &) = delete;

  // (Re)schedules e for `deadline_ms`, replacing any deadline it had. It fires at the first
  // advance() that reaches the tick after its deadline: never early, and late by less than one
  // resolution_ms plus the timer's own delay. A deadline that is already past fires at the next
  // advance() that reaches a new tick, never within the current one.
  void schedule(Entry &e, uint64_t deadline_ms) noexcept;

  // Fires every entry whose deadline is at or before now_ms among the slots of the ticks passed
  // since the last call: fire(entry) runs with the entry unscheduled, and may schedule it again,
  // cancel or destroy any entry, or schedule others. Entries of those slots not yet due stay.
  template <typename Fire> void advance(uint64_t now_ms, Fire &&fire);

  uint64_t resolution_ms() const noexcept { return resolution_; }

private:
  Entry &slot_of(uint64_t tick) noexcept { return slots_[tick & mask_]; }
  void link(Entry &e) noexcept; // into the slot of its deadline's tick, after the current one
  // Moves the entries of `head` to `into` (an empty list), leaving `head` empty.
  static void take_all(Entry &head, Entry &into) noexcept;

  uint64_t resolution_;
  uint64_t mask_;
  uint64_t tick_;                  // the last tick advance() has processed
  std::unique_ptr<Entry[]> slots_; // list heads; an empty one links to itself
};

template <typename Fire> void TimerWheel::advance(uint64_t now_ms, Fire &&fire) {
  const uint64_t target = now_ms / resolution_;
  if (target <= tick_)
    return;
  // After a gap longer than one turn every slot is visited once, and each entry is compared with
  // its own deadline, so none is skipped.
  if (target - tick_ > mask_ + 1)
    tick_ = target - (mask_ + 1);
  while (tick_ < target) {
    ++tick_; // first, so that whatever fire() schedules lands after this tick
    Entry &head = slot_of(tick_);
    if (head.next_ == &head)
      continue;
    // The slot's entries move to a local list first: those not yet due are linked back (into
    // their own slot) and those fired may reschedule themselves, without being visited twice.
    Entry visiting;
    take_all(head, visiting);
    while (visiting.next_ != &visiting) {
      Entry *e = visiting.next_;
      e->unlink();
      if (e->deadline_ <= now_ms)
        fire(*e);
      else
        link(*e);
    }
    visiting.prev_ = visiting.next_ = nullptr; // empty now: nothing to unlink
  }
}

} // namespace sidecar
