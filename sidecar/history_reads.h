// HistoryReads: what a room or a session needs to read a channel's history, and nothing else.
// RedisBus implements it; room and session tests can hand in a fake. No uv.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "history.h"

namespace sidecar {

// The answer to one history read. `error` is "" when `read` holds Redis's answer; otherwise it
// says why there is none (the link dropped, no reply in time, an error reply, a reply of the
// wrong shape, history off or its library not loaded, too many reads) and the caller resyncs
// with `unavailable`. The result is shared by every waiter of the read: copy what you keep.
using HistoryReadCallback = std::function<void(const HistoryReadResult &)>;
// Names one waiter, for cancel_history_read. Never 0.
using HistoryReadToken = uint64_t;

class HistoryReads {
public:
  // Reads the entries of `channel` after position `from`, at most `count` (FCALL sidecar_read).
  // `cb` is called exactly once, from a later loop callback and never from inside this call,
  // unless the waiter is cancelled first. Waiters asking for the same (channel, from, count)
  // before its FCALL is written share it and are answered in the order they asked. The FCALL
  // that answers a waiter is always written after the waiter asked, so a caller that starts
  // holding live messages before it asks misses nothing between the read and what it holds.
  virtual HistoryReadToken read_history(std::string channel, uint64_t from, uint32_t count,
                                        HistoryReadCallback cb) = 0;
  // As read_history, except that the waiter may also join a read of the same key that is
  // already on the wire, so its answer may describe the channel as it was a little before this
  // call. For a caller that can tell from the answer whether it is recent enough (a session
  // compares its top with the position its room had delivered when it asked) and asks again with
  // read_history when it is not. Shares one FCALL among the clients of a reconnect storm that
  // arrive over several loop turns.
  virtual HistoryReadToken read_history_shared(std::string channel, uint64_t from, uint32_t count,
                                               HistoryReadCallback cb) {
    return read_history(std::move(channel), from, count, std::move(cb));
  }
  // The waiter is never called after this (a session closing, a room going away). Unknown or
  // answered tokens are ignored. The read itself still completes for its other waiters.
  virtual void cancel_history_read(HistoryReadToken token) = 0;

protected:
  ~HistoryReads() = default;
};

} // namespace sidecar
