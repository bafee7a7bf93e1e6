// OutQueue; see out_queue.h.
#include "out_queue.h"

namespace sidecar {

bool OutQueue::push(SharedFrame *f) noexcept {
  if (count_ == cap_) {
    size_t ncap = cap_ == 0 ? 8 : cap_ * 2;
    std::unique_ptr<SharedFrame *[]> n(new (std::nothrow) SharedFrame *[ncap]);
    if (!n)
      return false;
    for (size_t i = 0; i < count_; ++i)
      n[i] = at(i);
    ring_ = std::move(n);
    cap_ = ncap;
    head_ = 0;
  }
  f->ref();
  ring_[(head_ + count_) & (cap_ - 1)] = f;
  ++count_;
  bytes_ += f->size();
  return true;
}

unsigned OutQueue::gather(uv_buf_t *bufs, unsigned max_bufs) const noexcept {
  unsigned n = 0;
  for (size_t i = 0; i < count_ && n < max_bufs; ++i) {
    SharedFrame *f = at(i);
    size_t skip = i == 0 ? head_offset_ : 0;
    bufs[n++] = uv_buf_init(reinterpret_cast<char *>(f->bytes() + skip),
                            static_cast<unsigned>(f->size() - skip));
  }
  return n;
}

void OutQueue::consume(size_t n) noexcept {
  bytes_ -= n;
  while (n > 0 && count_ > 0) {
    SharedFrame *f = at(0);
    size_t left = f->size() - head_offset_;
    if (n < left) {
      head_offset_ += n;
      return;
    }
    n -= left;
    head_offset_ = 0;
    head_ = (head_ + 1) & (cap_ - 1);
    --count_;
    f->unref();
  }
  // An empty queue that grew during a burst gives its memory back: idle sessions stay small.
  if (count_ == 0 && cap_ > 64) {
    ring_.reset();
    cap_ = 0;
    head_ = 0;
  }
}

void OutQueue::truncate(size_t keep) noexcept {
  while (count_ > keep) {
    SharedFrame *f = at(count_ - 1);
    size_t unsent = f->size() - (count_ == 1 ? head_offset_ : 0);
    bytes_ -= unsent;
    f->unref();
    --count_;
  }
  if (count_ == 0)
    head_offset_ = 0;
}

} // namespace sidecar
