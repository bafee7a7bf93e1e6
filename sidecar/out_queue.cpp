// OutQueue; see out_queue.h.
#include "out_queue.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace sidecar {

bool OutQueue::push(SharedFrame *f) noexcept {
  if (f->size() > UINT32_MAX)
    return false;
  if (count_ == cap_) {
    uint32_t ncap = cap_ < 8 ? 8 : cap_ * 2;
    auto *n = static_cast<SharedFrame **>(std::malloc(ncap * sizeof(SharedFrame *)));
    if (n == nullptr)
      return false;
    for (size_t i = 0; i < count_; ++i)
      n[i] = at(i);
    release_heap();
    heap_ = n;
    cap_ = ncap;
    head_ = 0;
  }
  f->ref();
  at(count_) = f;
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

ssize_t OutQueue::try_write(uv_stream_t *stream, unsigned max_bufs) const noexcept {
  if (count_ == 0)
    return 0;
  uv_os_fd_t fd = -1;
  if (int rc = uv_fileno(reinterpret_cast<const uv_handle_t *>(stream), &fd); rc != 0)
    return rc;
  ssize_t w;
  if (count_ == 1 || max_bufs == 1) {
    SharedFrame *f = at(0);
    do
      w = ::write(fd, f->bytes() + head_offset_, f->size() - head_offset_);
    while (w < 0 && errno == EINTR);
  } else {
    // libuv documents uv_buf_t as laid out like struct iovec on Unix; libuv casts it so too.
    uv_buf_t bufs[64];
    unsigned n = gather(bufs, max_bufs < 64 ? max_bufs : 64);
    do
      w = ::writev(fd, reinterpret_cast<const iovec *>(bufs), static_cast<int>(n));
    while (w < 0 && errno == EINTR);
  }
  if (w >= 0)
    return w;
  return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
}

void OutQueue::consume(size_t n) noexcept {
  bytes_ -= n;
  while (n > 0 && count_ > 0) {
    SharedFrame *f = at(0);
    size_t left = f->size() - head_offset_;
    if (n < left) {
      head_offset_ += static_cast<uint32_t>(n);
      return;
    }
    n -= left;
    head_offset_ = 0;
    head_ = (head_ + 1) & (cap_ - 1);
    --count_;
    f->unref();
  }
  // An empty queue that grew during a burst gives its memory back: idle sessions stay small.
  if (count_ == 0 && cap_ > 64)
    shrink();
}

void OutQueue::shrink() noexcept {
  if (count_ != 0 || !on_heap())
    return;
  release_heap();
  inline_[0] = inline_[1] = nullptr;
  cap_ = kInline;
  head_ = 0;
}

void OutQueue::release_heap() noexcept {
  if (on_heap())
    std::free(heap_);
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
