// Delivery accounting: sequence gaps, reorders, duplicates and the latency histogram.
#include "accounting.h"

#include <algorithm>
#include <bit>

namespace sidecar::bench {

LatencyHistogram::LatencyHistogram() : counts_(kBuckets, 0) {}

size_t LatencyHistogram::bucket_of(uint64_t value) {
  if (value < 64) {
    return static_cast<size_t>(value);
  }
  // bit_width is 7..64 here; keep the top 7 bits (a leading 1 and 6 bits of mantissa).
  const unsigned shift = static_cast<unsigned>(std::bit_width(value)) - 7;
  const uint64_t mantissa = value >> shift; // in [64, 128)
  return 64 + static_cast<size_t>(shift) * 64 + static_cast<size_t>(mantissa - 64);
}

uint64_t LatencyHistogram::bucket_upper(size_t index) {
  if (index < 64) {
    return index;
  }
  const size_t shift = (index - 64) / 64;
  const uint64_t mantissa = (index - 64) % 64 + 64;
  if (shift >= 57) {
    return UINT64_MAX; // The last power of two would overflow the upper bound.
  }
  return ((mantissa + 1) << shift) - 1;
}

void LatencyHistogram::record(uint64_t value) {
  ++counts_[bucket_of(value)];
  ++count_;
  max_ = std::max(max_, value);
}

void LatencyHistogram::merge(const LatencyHistogram &other) {
  for (size_t i = 0; i < kBuckets; ++i) {
    counts_[i] += other.counts_[i];
  }
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  max_ = 0;
}

uint64_t LatencyHistogram::quantile(double q) const {
  if (count_ == 0) {
    return 0;
  }
  q = std::clamp(q, 0.0, 1.0);
  // The rank is rounded up so that p100 is the last sample and p0 the first.
  auto rank = static_cast<uint64_t>(q * static_cast<double>(count_));
  if (static_cast<double>(rank) < q * static_cast<double>(count_) || rank == 0) {
    ++rank;
  }
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::min(bucket_upper(i), max_);
    }
  }
  return max_;
}

SeqTracker::Kind SeqTracker::on_receive(uint64_t seq) {
  ++received_;
  if (seq == next_) {
    ++next_;
    return Kind::in_order;
  }
  if (seq > next_) {
    gaps_.emplace_back(next_, seq);
    missing_ += seq - next_;
    next_ = seq + 1;
    return Kind::gap;
  }
  // Below next_: either it fills an open gap (a reorder) or it was seen already.
  auto it = std::upper_bound(gaps_.begin(), gaps_.end(), seq,
                             [](uint64_t s, const auto &gap) { return s < gap.first; });
  if (it != gaps_.begin()) {
    --it;
    if (seq < it->second) {
      const uint64_t first = it->first;
      const uint64_t end = it->second;
      if (first == seq && end == seq + 1) {
        gaps_.erase(it);
      } else if (first == seq) {
        it->first = seq + 1;
      } else if (end == seq + 1) {
        it->second = seq;
      } else {
        it->second = seq;
        gaps_.insert(it + 1, {seq + 1, end});
      }
      --missing_;
      ++out_of_order_;
      return Kind::late;
    }
  }
  ++duplicates_;
  return Kind::duplicate;
}

uint64_t SeqTracker::lost(uint64_t published) const {
  return missing_ + (published > next_ ? published - next_ : 0);
}

void DeliveryTotals::add(const SeqTracker &tracker, uint64_t published) {
  expected += published;
  received += tracker.received();
  unique += tracker.unique();
  lost += tracker.lost(published);
  out_of_order += tracker.out_of_order();
  duplicates += tracker.duplicates();
}

DeliveryTotals DeliveryTotals::minus(const DeliveryTotals &earlier) const {
  DeliveryTotals d;
  d.expected = expected - earlier.expected;
  d.received = received - earlier.received;
  d.unique = unique - earlier.unique;
  // Lost can shrink when a message counted lost in an earlier phase arrives late.
  d.lost = lost >= earlier.lost ? lost - earlier.lost : 0;
  d.out_of_order = out_of_order - earlier.out_of_order;
  d.duplicates = duplicates - earlier.duplicates;
  return d;
}

} // namespace sidecar::bench
