// OutQueue: one session's ordered queue of shared frames waiting to be written. Relayed frames,
// the sidecar's own JSON messages and wslay's control frames all pass through it, so bytes leave
// in the order they were queued and frames never interleave.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "shared_frame.h"

namespace sidecar {

class OutQueue {
public:
  OutQueue() = default;
  OutQueue(const OutQueue &) = delete;
  OutQueue &operator=(const OutQueue &) = delete;
  ~OutQueue() {
    clear();
    shrink();
  }

  // Takes a new reference to f. The first two frames fit inside the queue; beyond them the ring
  // moves to the heap and grows by doubling, so a steady state allocates nothing.
  bool push(SharedFrame *f) noexcept;
  bool empty() const noexcept { return count_ == 0; }
  size_t frames() const noexcept { return count_; }
  // Bytes not yet acknowledged by the kernel, including a write in flight.
  uint64_t bytes() const noexcept { return bytes_; }

  // Fills up to max_bufs buffers from the front (the first one may start mid-frame) and returns
  // how many were filled.
  unsigned gather(uv_buf_t *bufs, unsigned max_bufs) const noexcept;
  // Writes up to max_bufs frames from the front to the stream's socket, without blocking, and
  // returns what uv_try_write would: the bytes written, UV_EAGAIN, or another negative libuv
  // error. Only while libuv holds no write for the stream (its queue must stay in order). One
  // frame, the usual case when rooms are small, goes out with write(2) rather than writev(2):
  // Debian's libuv uses writev for any count, and the kernel's single-buffer path skips
  // copying and walking an iovec. Does not consume; the caller does once it knows the count.
  ssize_t try_write(uv_stream_t *stream, unsigned max_bufs) const noexcept;
  // Drops n written bytes from the front, releasing frames that are now fully written.
  void consume(size_t n) noexcept;
  // Drops the frames after the first `keep` ones (used when a slow consumer is cut off: what is
  // already in flight must stay alive until its write callback).
  void truncate(size_t keep) noexcept;
  void clear() noexcept { truncate(0); }
  // An empty queue gives back a ring it grew on the heap. Called when the session is idle (its
  // deadline tick), so a session that once had a burst queued does not keep paying for it.
  void shrink() noexcept;
  bool on_heap() const noexcept { return cap_ > kInline; }

private:
  // An upgrade queues two frames (the 101 answer and the welcome) and an idle session one at a
  // time (a ping), so two inline slots keep an idle session off the heap.
  static constexpr uint32_t kInline = 2;
  SharedFrame **slots() const noexcept {
    return on_heap() ? heap_ : const_cast<SharedFrame **>(inline_);
  }
  SharedFrame *&at(size_t i) const noexcept { return slots()[(head_ + i) & (cap_ - 1)]; }
  void release_heap() noexcept;

  union {
    SharedFrame *inline_[kInline] = {};
    SharedFrame **heap_; // cap_ entries, while on_heap()
  };
  uint64_t bytes_ = 0;
  uint32_t cap_ = kInline; // a power of two
  uint32_t head_ = 0;
  uint32_t count_ = 0;
  // Bytes of the front frame already written; no frame reaches 4 GiB (push refuses one).
  uint32_t head_offset_ = 0;
};

} // namespace sidecar
