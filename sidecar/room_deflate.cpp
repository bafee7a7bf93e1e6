// Compression in Rooms (room.h): which publications are deflated, and DeflatedFrames, the
// publication's compressed frames, built once for every member that agreed permessage-deflate.
//
// Every compressed frame is deflated from an empty window (we always answer
// server_no_context_takeover), so its bytes do not depend on who receives it: one deflate per
// publication and window size, however large the room.
#include <time.h>

#include "frame.h"
#include "room.h"
#include "shared_frame.h"

namespace sidecar {
namespace {

// CPU time of the calling thread (the loop's). The vDSO does not serve CPU clocks, so this is a
// system call: well under a microsecond, against about 15 us to deflate 2 KiB at level 1.
uint64_t thread_cpu_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// The payload of a server frame we built (unmasked, minimal length form).
std::string_view frame_payload(const SharedFrame &f) {
  const uint8_t *d = f.data();
  uint8_t len7 = d[1] & 0x7f;
  size_t header = len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
  return std::string_view(reinterpret_cast<const char *>(d) + header, f.size() - header);
}

} // namespace

DeflatedFrames::~DeflatedFrames() {
  for (uint8_t i = 0; i < used_; ++i) {
    if (entries_[i].frame != nullptr)
      entries_[i].frame->unref();
  }
}

SharedFrame *DeflatedFrames::get(SharedFrame *plain, uint8_t window_bits) noexcept {
  for (uint8_t i = 0; i < used_; ++i) {
    if (entries_[i].plain == plain && entries_[i].bits == window_bits)
      return entries_[i].frame;
  }
  if (used_ == entries_.size())
    return nullptr;
  Entry &e = entries_[used_++];
  e.plain = plain;
  e.bits = window_bits;
  Deflater *d = deflaters_.get(window_bits);
  if (d == nullptr)
    return nullptr; // zlib could not start: plain for everyone who asks again
  auto op = static_cast<Opcode>(plain->data()[0] & 0x0f);
  std::string_view payload = frame_payload(*plain);
  // Two clock reads per publication and window, not per recipient: the metric shows what
  // compress-once costs, and that it does not grow with the room. The thread's CPU clock, not
  // the wall clock: a deflate of a few microseconds that the kernel preempts would otherwise
  // count the other process's time slice (seen as 60-250 us per 2 KiB on a busy machine).
  uint64_t start = thread_cpu_ns();
  e.frame = d->make_frame(op, payload);
  counters_.deflate_ns += thread_cpu_ns() - start;
  if (e.frame == nullptr) {
    ++counters_.not_smaller;
    return nullptr;
  }
  ++counters_.frames_built;
  counters_.bytes_before += payload.size();
  counters_.bytes_after += frame_payload(*e.frame).size();
  return e.frame;
}

void Rooms::enable_compression(const DeflateOptions &options, CompressionCounters &counters) {
  compression_ = &options;
  compression_counters_ = &counters;
}

bool Rooms::deflates(const Room &room, size_t bytes) const noexcept {
  return room.deflate_members != 0 && compression_ != nullptr && compression_->enabled &&
         bytes >= compression_->min_bytes;
}

DeflaterSet *Rooms::deflaters() noexcept {
  int level = compression_->level;
  if (!deflaters_ || deflaters_->level() != level) {
    // A reload changed the level (or this is the first use): the old deflaters hold no frame,
    // so they can go at once.
    deflaters_.reset();
    try {
      deflaters_ = std::make_unique<DeflaterSet>(level);
    } catch (...) {
      return nullptr;
    }
  }
  return deflaters_.get();
}

} // namespace sidecar
