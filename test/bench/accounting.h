// Delivery accounting for the load generator: per-stream sequence tracking (lost, out-of-order,
// duplicate) and a log-linear latency histogram. Pure code without I/O, so that doctest can feed
// it synthetic sequences and the bench's own loss counting is itself tested.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace sidecar::bench {

// Log-linear histogram: exact below 64, then 64 linear sub-buckets per power of two, so any
// reported quantile is within 1/64 (about 1.6 %) of the true value. Fixed size, no allocation
// after construction, so recording on the receive path costs an index computation and an add.
class LatencyHistogram {
public:
  LatencyHistogram();
  void record(uint64_t value);
  void merge(const LatencyHistogram &other);
  void reset();
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  // The smallest bucket upper bound below which at least q of the samples fall, clamped to the
  // exact maximum; 0 when empty.
  uint64_t quantile(double q) const;

  static size_t bucket_of(uint64_t value);
  static uint64_t bucket_upper(size_t index);
  static constexpr size_t kBuckets = 64 + 58 * 64;

private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t max_ = 0;
};

// One subscriber's view of one room's sequence (numbers start at 0 and the publisher assigns
// them in order). Gaps are kept as ranges so that a late arrival can be told apart from a
// duplicate: a late sequence fills a gap (out of order, no longer lost), a repeated one does not.
class SeqTracker {
public:
  enum class Kind { in_order, gap, late, duplicate };

  Kind on_receive(uint64_t seq);

  // Lost messages given that the publisher has sent `published` messages (0..published-1) to
  // this room: every gap still open plus everything after the highest sequence seen.
  uint64_t lost(uint64_t published) const;
  uint64_t next() const { return next_; }
  uint64_t missing() const { return missing_; }
  uint64_t received() const { return received_; }
  uint64_t unique() const { return received_ - duplicates_; }
  uint64_t out_of_order() const { return out_of_order_; }
  uint64_t duplicates() const { return duplicates_; }

private:
  uint64_t next_ = 0;
  uint64_t missing_ = 0;
  uint64_t received_ = 0;
  uint64_t out_of_order_ = 0;
  uint64_t duplicates_ = 0;
  // Sorted, disjoint half-open ranges [first, second) of sequences below next_ never seen.
  std::vector<std::pair<uint64_t, uint64_t>> gaps_;
};

// Sums over many trackers, used for a phase's report (differences of two snapshots).
struct DeliveryTotals {
  uint64_t expected = 0;
  uint64_t received = 0;
  uint64_t unique = 0;
  uint64_t lost = 0;
  uint64_t out_of_order = 0;
  uint64_t duplicates = 0;

  void add(const SeqTracker &tracker, uint64_t published);
  DeliveryTotals minus(const DeliveryTotals &earlier) const;
};

} // namespace sidecar::bench
