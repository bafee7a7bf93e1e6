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
  ~OutQueue() { clear(); }

  // Takes a new reference to f. Grows the ring by doubling, so a steady state allocates nothing.
  bool push(SharedFrame *f) noexcept;
  bool empty() const noexcept { return count_ == 0; }
  size_t frames() const noexcept { return count_; }
  // Bytes not yet acknowledged by the kernel, including a write in flight.
  uint64_t bytes() const noexcept { return bytes_; }

  // Fills up to max_bufs buffers from the front (the first one may start mid-frame) and returns
  // how many were filled.
  unsigned gather(uv_buf_t *bufs, unsigned max_bufs) const noexcept;
  // Drops n written bytes from the front, releasing frames that are now fully written.
  void consume(size_t n) noexcept;
  // Drops the frames after the first `keep` ones (used when a slow consumer is cut off: what is
  // already in flight must stay alive until its write callback).
  void truncate(size_t keep) noexcept;
  void clear() noexcept { truncate(0); }

private:
  SharedFrame *&at(size_t i) const noexcept { return ring_[(head_ + i) & (cap_ - 1)]; }

  std::unique_ptr<SharedFrame *[]> ring_;
  size_t cap_ = 0; // power of two, or 0 before the first push
  size_t head_ = 0;
  size_t count_ = 0;
  size_t head_offset_ = 0; // bytes of the front frame already written
  uint64_t bytes_ = 0;
};

} // namespace sidecar
