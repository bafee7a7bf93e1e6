// Clocks: wall time for what people read (welcome, status, token expiry) and a monotonic clock for
// durations (handshake and fan-out latency). The loop's own uv_now() drives timeouts.
#pragma once

#include <chrono>
#include <cstdint>

namespace sidecar {

inline int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

inline int64_t unix_now() { return wall_ms() / 1000; }

inline uint64_t mono_ns() {
  using namespace std::chrono;
  return static_cast<uint64_t>(
      duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count());
}

} // namespace sidecar
