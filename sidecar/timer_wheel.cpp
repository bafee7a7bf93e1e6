// TimerWheel; see timer_wheel.h.
#include "timer_wheel.h"

namespace sidecar {

void TimerWheel::Entry::unlink() noexcept {
  if (next_ == nullptr)
    return;
  prev_->next_ = next_;
  next_->prev_ = prev_;
  prev_ = next_ = nullptr;
}

TimerWheel::TimerWheel(uint64_t now_ms, uint64_t resolution_ms, uint32_t slots)
    : resolution_(resolution_ms == 0 ? 1 : resolution_ms), tick_(now_ms / resolution_) {
  uint64_t n = 1;
  while (n < slots)
    n <<= 1;
  mask_ = n - 1;
  slots_ = std::make_unique<Entry[]>(n);
  for (uint64_t i = 0; i < n; ++i)
    slots_[i].prev_ = slots_[i].next_ = &slots_[i];
}

TimerWheel::~TimerWheel() {
  for (uint64_t i = 0; i <= mask_; ++i) {
    Entry &head = slots_[i];
    for (Entry *e = head.next_; e != &head;) {
      Entry *next = e->next_;
      e->prev_ = e->next_ = nullptr;
      e = next;
    }
    head.prev_ = head.next_ = nullptr;
  }
}

void TimerWheel::schedule(Entry &e, uint64_t deadline_ms) noexcept {
  e.unlink();
  e.deadline_ = deadline_ms;
  link(e);
}

void TimerWheel::link(Entry &e) noexcept {
  // The first tick at whose start the deadline has passed; advance() reaches tick t once the
  // clock is at t * resolution, so an entry is never looked at before it can be due.
  uint64_t tick = e.deadline_ / resolution_ + (e.deadline_ % resolution_ != 0 ? 1 : 0);
  if (tick <= tick_)
    tick = tick_ + 1;
  Entry &head = slot_of(tick);
  e.prev_ = head.prev_;
  e.next_ = &head;
  head.prev_->next_ = &e;
  head.prev_ = &e;
}

void TimerWheel::take_all(Entry &head, Entry &into) noexcept {
  into.next_ = head.next_;
  into.prev_ = head.prev_;
  into.next_->prev_ = &into;
  into.prev_->next_ = &into;
  head.prev_ = head.next_ = &head;
}

} // namespace sidecar
