// SmallVector: a vector that keeps its first N elements inside itself and moves to the heap only
// beyond them. A session's room memberships live in one: almost every session has three or fewer,
// and an idle connection must not pay a heap block (and its allocator overhead) for them.
//
// It holds trivially copyable elements only, so growing is a memcpy and nothing has a destructor
// to run. Growth reports failure instead of throwing, because its callers are noexcept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace sidecar {

template <typename T, uint32_t N> class SmallVector {
  static_assert(N > 0, "a SmallVector with no inline room is a plain vector");
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "elements are moved with memcpy and never destroyed");

public:
  SmallVector() noexcept = default;
  SmallVector(const SmallVector &) = delete;
  SmallVector &operator=(const SmallVector &) = delete;
  ~SmallVector() {
    if (on_heap())
      std::free(heap_);
  }

  uint32_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  uint32_t capacity() const noexcept { return cap_; }
  // True once the elements outgrew the inline room; they stay on the heap from then on.
  bool on_heap() const noexcept { return cap_ > N; }

  T *data() noexcept { return on_heap() ? heap_ : reinterpret_cast<T *>(inline_); }
  const T *data() const noexcept {
    return on_heap() ? heap_ : reinterpret_cast<const T *>(inline_);
  }
  T *begin() noexcept { return data(); }
  T *end() noexcept { return data() + size_; }
  const T *begin() const noexcept { return data(); }
  const T *end() const noexcept { return data() + size_; }
  T &operator[](uint32_t i) noexcept { return data()[i]; }
  const T &operator[](uint32_t i) const noexcept { return data()[i]; }
  T &back() noexcept { return data()[size_ - 1]; }

  // Makes room for n elements in all. False (and nothing changed) when the heap refuses.
  bool reserve(uint32_t n) noexcept {
    if (n <= cap_)
      return true;
    void *mem = std::malloc(sizeof(T) * size_t{n});
    if (mem == nullptr)
      return false;
    if (size_ > 0)
      std::memcpy(mem, data(), sizeof(T) * size_);
    if (on_heap())
      std::free(heap_);
    heap_ = static_cast<T *>(mem);
    cap_ = n;
    return true;
  }
  // Appends v, doubling the capacity when full. False (and nothing changed) when the heap
  // refuses.
  bool push_back(const T &v) noexcept {
    T copy = v; // v may be one of ours, and growing frees the block it lives in
    if (size_ == cap_ && (cap_ > UINT32_MAX / 2 || !reserve(cap_ * 2)))
      return false;
    std::memcpy(static_cast<void *>(data() + size_), &copy, sizeof(T));
    ++size_;
    return true;
  }
  void pop_back() noexcept { --size_; }

private:
  uint32_t size_ = 0;
  uint32_t cap_ = N;
  // The inline elements, or (once cap_ > N) the heap block; never both.
  union {
    alignas(T) std::byte inline_[sizeof(T) * N];
    T *heap_;
  };
};

} // namespace sidecar
