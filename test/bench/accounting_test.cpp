// Tests for the bench's own loss, order and latency accounting, fed synthetic sequences.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "accounting.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

using sidecar::bench::DeliveryTotals;
using sidecar::bench::LatencyHistogram;
using SeqTracker = sidecar::bench::SeqTracker;
using Kind = SeqTracker::Kind;

TEST_CASE("an in-order stream has no loss, reorder or duplicate") {
  SeqTracker t;
  for (uint64_t s = 0; s < 1000; ++s) {
    CHECK(t.on_receive(s) == Kind::in_order);
  }
  CHECK(t.lost(1000) == 0);
  CHECK(t.unique() == 1000);
  CHECK(t.out_of_order() == 0);
  CHECK(t.duplicates() == 0);
}

TEST_CASE("a gap counts every skipped sequence as lost") {
  SeqTracker t;
  for (uint64_t s : {0, 1, 2, 6, 7}) {
    t.on_receive(s);
  }
  CHECK(t.missing() == 3);
  CHECK(t.lost(8) == 3);
}

TEST_CASE("messages never received at the end of the stream are lost") {
  SeqTracker t;
  t.on_receive(0);
  t.on_receive(1);
  CHECK(t.lost(10) == 8);
  CHECK(t.lost(2) == 0);
}

TEST_CASE("a late arrival fills its gap and counts as out of order, not lost") {
  SeqTracker t;
  CHECK(t.on_receive(0) == Kind::in_order);
  CHECK(t.on_receive(2) == Kind::gap);
  CHECK(t.on_receive(1) == Kind::late);
  CHECK(t.on_receive(3) == Kind::in_order);
  CHECK(t.lost(4) == 0);
  CHECK(t.out_of_order() == 1);
  CHECK(t.duplicates() == 0);
}

TEST_CASE("a repeated sequence is a duplicate, also when it repeats a late one") {
  SeqTracker t;
  t.on_receive(0);
  CHECK(t.on_receive(0) == Kind::duplicate);
  t.on_receive(3);
  CHECK(t.on_receive(1) == Kind::late);
  CHECK(t.on_receive(1) == Kind::duplicate);
  CHECK(t.on_receive(3) == Kind::duplicate);
  CHECK(t.duplicates() == 3);
  CHECK(t.out_of_order() == 1);
  CHECK(t.lost(4) == 1); // 2 never came
  CHECK(t.unique() == 3);
}

TEST_CASE("late arrivals in the middle of a wide gap split it correctly") {
  SeqTracker t;
  t.on_receive(0);
  t.on_receive(10); // gap [1,10)
  CHECK(t.on_receive(5) == Kind::late);
  CHECK(t.on_receive(1) == Kind::late);
  CHECK(t.on_receive(9) == Kind::late);
  CHECK(t.on_receive(5) == Kind::duplicate);
  CHECK(t.missing() == 6); // 2,3,4,6,7,8
  for (uint64_t s : {2, 3, 4, 6, 7, 8}) {
    CHECK(t.on_receive(s) == Kind::late);
  }
  CHECK(t.missing() == 0);
  CHECK(t.lost(11) == 0);
}

TEST_CASE("a shuffled and partly duplicated stream is fully accounted") {
  // Deliver 0..N-1 minus a known set, in a locally shuffled order, with some repeats.
  std::mt19937_64 rng(42);
  const uint64_t n = 5000;
  std::vector<uint64_t> order;
  uint64_t dropped = 0;
  for (uint64_t s = 0; s < n; ++s) {
    if (s % 97 == 13) {
      ++dropped;
      continue;
    }
    order.push_back(s);
  }
  // Swap neighbours within a small window so that reorders happen but stay local.
  for (size_t i = 0; i + 3 < order.size(); i += 7) {
    std::swap(order[i], order[i + 1 + rng() % 3]);
  }
  const size_t distinct = order.size();
  for (size_t i = 0; i < distinct; i += 50) {
    order.push_back(order[i]);
  }
  SeqTracker t;
  for (uint64_t s : order) {
    t.on_receive(s);
  }
  CHECK(t.lost(n) == dropped);
  CHECK(t.unique() == distinct);
  CHECK(t.duplicates() == order.size() - distinct);
  CHECK(t.out_of_order() > 0);
  CHECK(t.received() == order.size());
}

TEST_CASE("delivery totals of a phase are the difference of two snapshots") {
  SeqTracker a;
  SeqTracker b;
  a.on_receive(0);
  b.on_receive(0);
  DeliveryTotals before;
  before.add(a, 1);
  before.add(b, 1);
  a.on_receive(1);
  a.on_receive(2);
  b.on_receive(2); // b lost 1
  DeliveryTotals after;
  after.add(a, 3);
  after.add(b, 3);
  const DeliveryTotals phase = after.minus(before);
  CHECK(phase.expected == 4);
  CHECK(phase.received == 3);
  CHECK(phase.lost == 1);
}

TEST_CASE("histogram quantiles stay within the bucket precision") {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 100000; ++v) {
    h.record(v * 1000);
  }
  CHECK(h.count() == 100000);
  CHECK(h.max() == 100000000);
  const auto within = [](uint64_t got, double want) {
    return static_cast<double>(got) >= want * 0.999 && static_cast<double>(got) <= want * 1.02;
  };
  CHECK(within(h.quantile(0.5), 50000000.0));
  CHECK(within(h.quantile(0.99), 99000000.0));
  CHECK(within(h.quantile(0.999), 99900000.0));
  CHECK(h.quantile(1.0) == 100000000);
}

TEST_CASE("histogram buckets are exact below 64 and contiguous above") {
  for (uint64_t v = 0; v < 64; ++v) {
    CHECK(LatencyHistogram::bucket_of(v) == v);
  }
  for (uint64_t v = 64; v < 100000; v += 7) {
    const size_t i = LatencyHistogram::bucket_of(v);
    CHECK(LatencyHistogram::bucket_upper(i) >= v);
    CHECK(LatencyHistogram::bucket_upper(i - 1) < v);
  }
  CHECK(LatencyHistogram::bucket_of(UINT64_MAX) < LatencyHistogram::kBuckets);
}

TEST_CASE("an empty histogram reports zero and a merged one sums its parts") {
  LatencyHistogram a;
  LatencyHistogram b;
  CHECK(a.quantile(0.99) == 0);
  a.record(10);
  b.record(20);
  b.record(30);
  a.merge(b);
  CHECK(a.count() == 3);
  CHECK(a.max() == 30);
  CHECK(a.quantile(0.5) == 20);
  a.reset();
  CHECK(a.count() == 0);
}
