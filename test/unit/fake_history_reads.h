// A HistoryReads for room and session tests: it records each read and answers it only when the
// test says so, as RedisBus would from a later loop callback.
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "history_reads.h"

namespace sidecar {

// HistoryReads that records each read and answers it when a test says so.
struct FakeReads final : HistoryReads {
  struct Read {
    std::string channel;
    uint64_t from;
    uint32_t count;
    HistoryReadCallback cb;
    bool shared = false; // asked with read_history_shared: may be a read already on the wire
  };
  std::vector<Read> reads;
  HistoryReadToken read_history(std::string channel, uint64_t from, uint32_t count,
                                HistoryReadCallback cb) override {
    reads.push_back({std::move(channel), from, count, std::move(cb)});
    return reads.size(); // token i+1 names read i
  }
  HistoryReadToken read_history_shared(std::string channel, uint64_t from, uint32_t count,
                                       HistoryReadCallback cb) override {
    reads.push_back({std::move(channel), from, count, std::move(cb), true});
    return reads.size();
  }
  void cancel_history_read(HistoryReadToken token) override { reads.at(token - 1).cb = nullptr; }
  bool pending(size_t i) const { return static_cast<bool>(reads.at(i).cb); }
  // Answers read i (0-based) with epoch, top and entries (offset, payload).
  void answer(size_t i, const std::string &epoch, uint64_t top,
              std::vector<std::pair<uint64_t, std::string>> entries = {}) {
    HistoryReadResult r;
    r.read.epoch = epoch;
    r.read.top = top;
    r.read.entries = std::move(entries);
    REQUIRE(reads.at(i).cb);
    auto cb = std::move(reads[i].cb);
    reads[i].cb = nullptr;
    cb(r);
  }
  void fail(size_t i) {
    HistoryReadResult r;
    r.error = "link down";
    auto cb = std::move(reads.at(i).cb);
    reads[i].cb = nullptr;
    cb(r);
  }
};

} // namespace sidecar
