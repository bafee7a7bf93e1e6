// SharedFrame: one encoded WebSocket frame (header and payload in one allocation), immutable once
// built, shared by every session that sends it. The count is not atomic: one thread owns all of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>

#include "frame.h"

namespace sidecar {

class SharedFrame {
public:
  // Encodes a server frame (unmasked, minimal length). Returns nullptr when out of memory.
  static SharedFrame *make(Opcode op, std::string_view payload) noexcept {
    uint8_t header[kMaxFrameHeader];
    size_t hlen = encode_frame_header(header, op, payload.size());
    return make_raw(std::string_view(reinterpret_cast<const char *>(header), hlen), payload);
  }
  // Bytes already framed (wslay's own output); copied as they are.
  static SharedFrame *make_raw(std::string_view head, std::string_view tail = {}) noexcept {
    size_t len = head.size() + tail.size();
    void *mem = std::malloc(sizeof(SharedFrame) + len);
    if (mem == nullptr)
      return nullptr;
    auto *f = new (mem) SharedFrame(len);
    if (!head.empty())
      std::memcpy(f->bytes(), head.data(), head.size());
    if (!tail.empty())
      std::memcpy(f->bytes() + head.size(), tail.data(), tail.size());
    return f;
  }

  void ref() noexcept { ++refs_; }
  void unref() noexcept {
    if (--refs_ == 0) {
      this->~SharedFrame();
      std::free(this);
    }
  }
  uint8_t *bytes() noexcept { return reinterpret_cast<uint8_t *>(this + 1); }
  const uint8_t *data() const noexcept { return reinterpret_cast<const uint8_t *>(this + 1); }
  size_t size() const noexcept { return size_; }
  uint32_t refs() const noexcept { return refs_; }

  // Monotonic time (ns) at which the message that produced this frame was received from Redis;
  // 0 for frames that did not come from Redis. Used for the fan-out latency histogram.
  uint64_t received_ns = 0;

private:
  explicit SharedFrame(size_t size) : size_(size) {}
  size_t size_;
  uint32_t refs_ = 1; // the creator's reference
};

// Holds one reference for a scope; the creator's reference is adopted.
class FrameRef {
public:
  FrameRef() = default;
  explicit FrameRef(SharedFrame *adopted) : f_(adopted) {}
  FrameRef(const FrameRef &) = delete;
  FrameRef &operator=(const FrameRef &) = delete;
  FrameRef(FrameRef &&o) noexcept : f_(o.f_) { o.f_ = nullptr; }
  FrameRef &operator=(FrameRef &&o) noexcept {
    if (this != &o) {
      if (f_)
        f_->unref();
      f_ = o.f_;
      o.f_ = nullptr;
    }
    return *this;
  }
  ~FrameRef() {
    if (f_)
      f_->unref();
  }
  SharedFrame *get() const { return f_; }
  explicit operator bool() const { return f_ != nullptr; }

private:
  SharedFrame *f_ = nullptr;
};

} // namespace sidecar
